include!("support/bert.rs");

fn main() {
    let _ = Bert::paths().encoder().layr(0);
}
