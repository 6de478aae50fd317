// Shared by the build scripts of every package that links binaries (tests, examples, the CLI).
// It is `include!`d rather than a crate because a build script cannot depend on its own workspace
// without a build-dependency cycle, and the logic is five lines.

/// Makes the binaries of the package being built find libtorch with `LD_LIBRARY_PATH` unset, and
/// keeps `libtorch.so` (and through it `libtorch_cuda.so`) in their `NEEDED` entries.
///
/// `var` names the environment variable that holds libtorch's lib folder: `DEP_TCH_LIBTORCH_LIB`
/// for a direct dependent of `torch-sys` (its `links` key is `tch`).
fn link_libtorch(var: &str) {
    println!("cargo:rerun-if-env-changed={var}");
    let Ok(lib) = std::env::var(var) else {
        println!("cargo:warning=`{var}` is not set, so binaries will need LD_LIBRARY_PATH to find libtorch");
        return;
    };
    // An rpath (RUNPATH with the new dtags the toolchain uses) to the folder libtorch came from.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // rustc links with `--as-needed`; nothing references libtorch.so's symbols directly, so without
    // this it is dropped, and with it libtorch_cuda.so, and then CUDA reports unavailable.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    // Re-exported as `DEP_<links>_LIBTORCH_LIB` to the build scripts of our dependents.
    println!("cargo:libtorch_lib={lib}");
}
