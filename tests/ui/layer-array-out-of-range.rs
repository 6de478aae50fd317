include!("support/bert.rs");

fn main() {
    let _ = hooks::layer!(Bert, "encoder.layer.0.heads.4");
}
