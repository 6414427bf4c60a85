//! slotgate-bench entry point.
fn main() {}
