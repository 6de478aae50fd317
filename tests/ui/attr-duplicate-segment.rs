use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
struct Model {
    dense: HookPoint,
    #[hook(rename = "dense")]
    dense_2: HookPoint,
    r#type: HookPoint,
    #[hook(rename = "type")]
    kind: HookPoint,
    // A skipped field has no segment, so it clashes with nothing.
    #[hook(skip)]
    #[allow(dead_code)]
    spare: HookPoint,
}

fn main() {}
