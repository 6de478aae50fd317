//! Embeds an rpath to libtorch into the benchmarks (see build-support/link_libtorch.rs).

include!("../build-support/link_libtorch.rs");

fn main() {
    link_libtorch("DEP_HOOKS_LIBTORCH_LIB");
}
