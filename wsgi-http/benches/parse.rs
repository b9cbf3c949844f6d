//! Head parsing throughput.
fn main() {}
