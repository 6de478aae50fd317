use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
struct Attention {
    #[hook(rename = "self.query")]
    query: HookPoint,
}

fn main() {}
