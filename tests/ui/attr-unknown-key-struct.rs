use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
#[hook(krate = "::hooks")]
struct Model {
    point: HookPoint,
}

fn main() {}
