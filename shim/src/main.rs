//! `berth-shim`: the per-container supervisor (see `berth_shim::supervise`).

fn main() {
    std::process::exit(berth_shim::supervise::main());
}
