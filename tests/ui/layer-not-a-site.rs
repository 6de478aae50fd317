include!("support/bert.rs");

fn main() {
    let _ = hooks::layer!(Bert, "encoder");
}
