use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
struct Model {
    #[hook(alias = "h.0")]
    dotted: HookPoint,
    #[hook(skip, alias = "gone")]
    skipped: HookPoint,
    #[hook(alias = "own")]
    own: HookPoint,
    #[hook(alias = "own")]
    clash: HookPoint,
    #[hook(alias = "twice", alias = "twice")]
    repeated: HookPoint,
    #[hook(alias = 3)]
    number: HookPoint,
}

fn main() {}
