use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
struct Model {
    #[hook(rename = "a", rename = "b")]
    point: HookPoint,
    #[hook(skip)]
    #[hook(skip)]
    spare: HookPoint,
}

fn main() {}
