include!("support/bert.rs");

fn main() {
    let _ = Bert::paths().hidden_size();
}
