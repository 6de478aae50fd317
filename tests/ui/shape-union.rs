use hooks::Hookable;

#[derive(Hookable)]
union Bits {
    int: u32,
    float: f32,
}

fn main() {}
