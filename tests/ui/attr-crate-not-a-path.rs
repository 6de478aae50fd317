use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
#[hook(crate = "not a path")]
struct Model {
    point: HookPoint,
}

fn main() {}
