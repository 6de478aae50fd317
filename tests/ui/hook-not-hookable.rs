use hooks::{Hook, Hookable};

// Forgot `#[derive(Hookable)]`.
struct NotDerived;

#[derive(Hookable)]
struct Model {
    inner: Hook<NotDerived>,
}

fn main() {}
