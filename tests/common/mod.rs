//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The Python interpreter with numpy (and later transformers): `HOOKS_PYTHON` (set by `make`),
/// else the project's `.venv`. `None` (and a note on stderr) when neither exists, so that
/// `cargo test` outside `make` still runs everything else.
pub fn python() -> Option<PathBuf> {
    // The workspace's `.venv`, found upwards from whichever package includes this file.
    let venv = || {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join(".venv/bin/python"))
            .find(|python| python.exists())
            .unwrap_or_else(|| PathBuf::from(".venv/bin/python"))
    };
    let candidate = std::env::var_os("HOOKS_PYTHON").map_or_else(venv, PathBuf::from);
    if candidate.exists() {
        Some(candidate)
    } else {
        eprintln!(
            "note: no Python found at `{}`; skipping the numpy check (run `make test`)",
            candidate.display()
        );
        None
    }
}

/// Runs `tests/py/<script>` with `args` and returns its stdout; panics with its stderr on failure.
pub fn run_python(python: &PathBuf, script: &str, args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(script);
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
