use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
#[hook(skip)]
struct Model {
    #[hook(crate = "::hooks")]
    point: HookPoint,
    #[hook(skip = true)]
    spare: HookPoint,
    #[hook]
    other: HookPoint,
}

fn main() {}
