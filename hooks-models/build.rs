//! Embeds an rpath to libtorch into this package's binaries (see build-support/link_libtorch.rs).

include!("../build-support/link_libtorch.rs");

fn main() {
    // hooks-runtime (`links = "hooks_runtime"`) passes on the libtorch folder torch-sys found.
    link_libtorch("DEP_HOOKS_RUNTIME_LIBTORCH_LIB");
}
