//! Binaries find libtorch with `LD_LIBRARY_PATH` unset, and keep libtorch (and so libtorch_cuda,
//! where the libtorch has it) loaded: without that, a CUDA machine reports no CUDA.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::path::{Path, PathBuf};
use std::process::Command;

/// `readelf -d` of `binary`: its NEEDED entries and its RUNPATH folders.
fn dynamic_section(binary: &Path) -> (Vec<String>, Vec<PathBuf>) {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .expect("readelf (binutils) is installed");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let bracketed = |line: &str| {
        line.split('[')
            .nth(1)
            .and_then(|s| s.split(']').next())
            .unwrap_or("")
            .to_owned()
    };
    let needed = text.lines().filter(|l| l.contains("(NEEDED)")).map(bracketed).collect();
    let runpath = text
        .lines()
        .filter(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .flat_map(|l| bracketed(l).split(':').map(PathBuf::from).collect::<Vec<_>>())
        .collect();
    (needed, runpath)
}

fn check(binary: &Path) -> PathBuf {
    let (needed, runpath) = dynamic_section(binary);
    assert!(
        needed.iter().any(|n| n == "libtorch.so"),
        "{}: NEEDED {needed:?}",
        binary.display()
    );
    let lib = runpath
        .iter()
        .find(|dir| dir.join("libtorch.so").is_file())
        .unwrap_or_else(|| panic!("{}: no RUNPATH folder holds libtorch.so: {runpath:?}", binary.display()));
    lib.clone()
}

#[test]
fn the_cli_and_test_binaries_link_libtorch_by_runpath() {
    check(Path::new(env!("CARGO_BIN_EXE_hooks")));
    check(&std::env::current_exe().unwrap());
}

#[test]
fn libtorch_cuda_is_loaded_when_the_libtorch_has_it() {
    let lib = check(&std::env::current_exe().unwrap());
    // Make sure libtorch is initialised in this process, then look at what is mapped.
    let _ = tch::Cuda::is_available();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(maps.contains("/libtorch.so"), "libtorch.so is not mapped");
    if lib.join("libtorch_cuda.so").is_file() {
        assert!(
            maps.contains("/libtorch_cuda.so"),
            "libtorch_cuda.so exists in {} but is not loaded",
            lib.display()
        );
        // And the CLI, started as a user starts it, loads it too.
        let out = Command::new(env!("CARGO_BIN_EXE_hooks"))
            .arg("--version")
            .env_remove("LD_LIBRARY_PATH")
            .env("LD_DEBUG", "libs")
            .output()
            .unwrap();
        assert!(out.status.success());
        let trace = String::from_utf8_lossy(&out.stderr);
        assert!(
            trace.contains("libtorch_cuda.so"),
            "the CLI did not load libtorch_cuda.so"
        );
    } else {
        eprintln!(
            "note: {} has no libtorch_cuda.so (a CPU-only libtorch); nothing more to check",
            lib.display()
        );
    }
}
