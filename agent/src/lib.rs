//! berth-agent: the node daemon that runs containers and reports capacity.
//!
//! Filled in by its own issue; see docs/ARCHITECTURE.md for where it sits.
