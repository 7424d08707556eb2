//! `berth-shim`, the per-container supervisor (as conmon is for podman), and the client side
//! of it that the agent and `berth run -d` share.
//!
//! The shim runs `berth-runtime create` and `start` with the container's output on a pipe, is
//! the container's parent (a child subreaper), copies the output into the size-capped, rotated
//! `ctr.log` and records the exit in `exit.json`. It outlives its caller: a caller finds it
//! again from `shim.json` (its pid and start time) and waits on it through a pidfd.
//!
//! - [`supervise`]: the shim process itself (single-threaded: poll(2) on the log pipe and a
//!   signalfd), called by the `berth-shim` binary.
//! - [`client`]: what callers use: [`start`], [`wait_exit`], [`stop`], [`read_state`].
//! - [`paths`]: the files the shim and its callers share in the container's directory.
//!
//! The crate depends on the runtime only (its host layer, `berth_runtime::sys`, and the
//! systemd unit naming of `berth_runtime::cgroup_driver`), never on the
//! agent or the CLI.

pub mod client;
pub mod paths;
pub mod supervise;

pub use client::{
    ShimConfig, ShimError, is_alive, lock_held, read_exit, read_state, start, stop, wait_exit,
};
pub use paths::ShimPaths;
pub use supervise::oom_killed;

use serde::{Deserialize, Serialize};

/// `shim.json`: written by the shim once the container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    pub shim_pid: u32,
    /// Field 22 of the shim's /proc/PID/stat (clock ticks after boot): tells the shim from a
    /// later process that reuses its pid.
    pub shim_start_time: u64,
    pub container_pid: u32,
    pub started_at_ms: i64,
}

/// `exit.json`: written by the shim when the container's init has ended (and by a foreground
/// `berth run`, in the same format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code, or 128+N when signal N ended it.
    pub exit_code: i32,
    /// Whether the kernel's OOM killer acted in the container's memory cgroup.
    pub oom_killed: bool,
    pub finished_at_ms: i64,
}
