//! Embeds an rpath to libtorch into this package's binaries (see build-support/link_libtorch.rs).

include!("build-support/link_libtorch.rs");

fn main() {
    // hooks-runtime depends on torch-sys directly and passes its libtorch folder on.
    link_libtorch("DEP_HOOKS_RUNTIME_LIBTORCH_LIB");
}
