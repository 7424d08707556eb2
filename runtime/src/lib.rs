//! berth's OCI runtime: runs a bundle (config.json + rootfs) isolated by namespaces and cgroups,
//! as runc does; the `berth-runtime` binary is a thin runc-compatible front end to it.
//!
//! This crate depends on nothing else of berth's.

pub mod cgroup_driver;
pub(crate) mod cgroups;
pub(crate) mod console;
pub mod container;
pub(crate) mod error;
pub mod exec;
pub mod explain;
pub mod features;
pub mod forward;
pub(crate) mod hooks;
mod init;
pub(crate) mod namespaces;
pub mod process;
pub(crate) mod rootfs;
pub(crate) mod seccomp;
pub(crate) mod seccomp_profile;
pub mod security;
pub mod spec;
pub mod state;
pub(crate) mod sync;
pub mod sys;
pub(crate) mod syscall;
pub mod update;

pub use container::{CreateOptions, create, delete, kill, run, start, state};
pub use error::{Error, Result};
pub use rootfs::secure_join;
