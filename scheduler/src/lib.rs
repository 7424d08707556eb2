//! berth-scheduler: the control plane that places and rolls out deployments.
//!
//! Filled in by its own issue; see docs/ARCHITECTURE.md for where it sits.
