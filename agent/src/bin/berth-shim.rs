//! berth-shim (being written).
fn main() {}
