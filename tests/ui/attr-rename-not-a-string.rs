use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
struct Model {
    #[hook(rename = LayerNorm)]
    norm: HookPoint,
    #[hook(rename = 3)]
    third: HookPoint,
    #[hook(rename)]
    bare: HookPoint,
}

fn main() {}
