use hooks::{Hook, HookPoint, Hookable};

#[derive(Hookable)]
enum Activation {
    Relu,
    Point(HookPoint),
}

// Using the enum adds no error of its own to the one above.
#[derive(Hookable)]
struct Model {
    activation: Hook<Activation>,
}

fn main() {
    let _ = Model::paths().activation().path();
}
