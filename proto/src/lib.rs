//! berth.v1 protocol: .proto files and generated tonic code.
//!
//! Filled in by its own issue; see docs/ARCHITECTURE.md for where it sits.
