include!("support/bert.rs");

fn main() {
    let _ = hooks::layer!(Bert, "pooler.activation.output");
}
