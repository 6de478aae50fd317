use hooks::{HookPoint, Hookable};

#[derive(Hookable)]
struct Pair(HookPoint, HookPoint);

fn main() {}
