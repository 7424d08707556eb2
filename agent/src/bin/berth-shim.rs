//! `berth-shim`: the per-container supervisor (see `berth_agent::shim::supervise`).

fn main() {
    std::process::exit(berth_agent::shim::supervise::main());
}
