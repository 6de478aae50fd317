use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
struct Model {
    #[hook(skip, rename = "point")]
    point: HookPoint,
}

fn main() {}
