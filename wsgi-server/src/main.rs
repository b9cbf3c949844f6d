//! The wsgi-server binary.
fn main() {}
