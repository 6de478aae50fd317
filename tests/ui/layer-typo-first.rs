include!("support/bert.rs");

fn main() {
    let _ = hooks::layer!(Bert, "encodr.layer.0.attention");
}
