use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
struct Model {
    #[hook(renam = "Point")]
    point: HookPoint,
}

fn main() {}
