//! berth-agent (being written).
fn main() {}
