use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
struct Model {
    #[hook(rename = "")]
    point: HookPoint,
}

fn main() {}
