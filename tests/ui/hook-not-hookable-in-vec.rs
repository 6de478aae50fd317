use hooks::{Hook, Hookable};

// Forgot `#[derive(Hookable)]`.
struct NotDerived;

// Inside a `Vec`, the generated code repeats the error once on the whole field type (it names
// `Vec<Hook<NotDerived>>` in an expression, where rustc reports the outer type).
#[derive(Hookable)]
struct Model {
    inner: Vec<Hook<NotDerived>>,
}

fn main() {}
