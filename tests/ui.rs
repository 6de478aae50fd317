//! Compile errors of `#[derive(Hookable)]`, `hooks::layer!` and the typed path builder, against
//! reviewed `.stderr` snapshots. Regenerate with `TRYBUILD=overwrite cargo test --test ui` and
//! read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
