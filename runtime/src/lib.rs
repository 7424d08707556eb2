//! berth's OCI runtime: runs a bundle (config.json + rootfs) isolated by namespaces and cgroups.
//!
//! The lifecycle (create, start, state, kill, delete) and the `berth-runtime` binary arrive with
//! issue 3; this crate depends on nothing else of berth's.
