//! What the `hooks` command's test files share.

use std::process::{Command, Output};

/// Runs the `hooks` binary with `args`, as a user's shell would (no `LD_LIBRARY_PATH`: the
/// binary finds libtorch by its rpath).
pub fn hooks_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hooks"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap()
}
