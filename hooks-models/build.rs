//! Embeds an rpath to libtorch into this package's binaries (see build-support/link_libtorch.rs).

include!("../build-support/link_libtorch.rs");

fn main() {
    // The `hooks` facade (`links = "hooks"`) passes on the libtorch folder torch-sys found.
    link_libtorch("DEP_HOOKS_LIBTORCH_LIB");
}
