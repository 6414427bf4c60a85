//! slotgate-node entry point.
fn main() {}
