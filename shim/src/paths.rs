//! The files of one container that the shim writes and its callers read, all in the
//! container's directory (beside the bundle's config.json):
//!
//! ```text
//! DIR/shim.json      the shim's pid and start time, the container's pid
//! DIR/exit.json      the exit code and OOM verdict, once the container ended
//! DIR/ctr.log        output (ctr.log.1 .. ctr.log.N: older parts, 1 the most recent)
//! DIR/runtime.log    the runtime's messages (JSON lines: level, msg, time)
//! DIR/container.pid  where `berth-runtime create` writes the container's pid
//! DIR/shim.lock      held by the shim for its whole life
//! DIR/shim.log       the shim's own stderr
//! ```

use std::path::PathBuf;

/// Where one container's shim files are, and the runtime state the shim drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimPaths {
    /// The container id (the runtime's, too).
    pub id: String,
    /// The container's directory, which is also the runtime bundle.
    pub dir: PathBuf,
    /// The runtime's state directory (`berth-runtime --root`).
    pub runtime_root: PathBuf,
}

impl ShimPaths {
    pub fn shim_state(&self) -> PathBuf {
        self.dir.join("shim.json")
    }
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("ctr.log")
    }
    /// The n-th older log part (1 = the most recent before ctr.log).
    pub fn old_log(&self, n: u32) -> PathBuf {
        self.dir.join(format!("ctr.log.{n}"))
    }
    /// The runtime's own messages for this container's shim (JSON lines: level, msg, time).
    pub fn runtime_log(&self) -> PathBuf {
        self.dir.join("runtime.log")
    }
    /// Where `berth-runtime create` writes the container's pid for the shim.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("container.pid")
    }
    /// Locked by the container's shim for its whole life: a second shim for the same
    /// container cannot start, and a caller can tell a shim is running before it has
    /// written shim.json.
    pub fn shim_lock(&self) -> PathBuf {
        self.dir.join("shim.lock")
    }
    /// The shim's own stderr (its diagnostics; a panic's message).
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
}
