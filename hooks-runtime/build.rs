//! Embeds an rpath to libtorch into this package's binaries (see build-support/link_libtorch.rs).

include!("../build-support/link_libtorch.rs");

fn main() {
    link_libtorch("DEP_TCH_LIBTORCH_LIB");
}
