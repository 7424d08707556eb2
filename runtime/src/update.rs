//! `update`: changes a live container's cgroup limits. The files a change may touch are read
//! first and written back if the kernel rejects a value, so a failed update changes nothing.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use crate::cgroups::Cgroup;
use crate::error::{Error, Result};
use crate::state::Status;

/// The limit files `update` may write, on cgroup v1 and v2, in the order they are restored
/// (the memory+swap limit after the memory limit it must not fall below, and before).
const LIMIT_FILES: &[&str] = &[
    "memory.memsw.limit_in_bytes",
    "memory.limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.soft_limit_in_bytes",
    "memory.swappiness",
    "memory.max",
    "memory.low",
    "memory.swap.max",
    "cpu.shares",
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
    "cpu.max",
    "cpu.weight",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
    "blkio.weight",
    "io.weight",
];

/// The current content of every limit file of the cgroup at `path`.
fn snapshot(path: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for dir in crate::cgroups::hierarchy_dirs(path) {
        for name in LIMIT_FILES {
            let file = dir.join(name);
            if let Ok(text) = std::fs::read_to_string(&file) {
                out.push((file, text.trim().to_string()));
            }
        }
    }
    out
}

/// Writes the snapshot back; a value that is already there is skipped.
fn restore(saved: &[(PathBuf, String)]) {
    for (file, value) in saved {
        let now = std::fs::read_to_string(file).unwrap_or_default();
        if now.trim() != value {
            // Best effort: the order of LIMIT_FILES lets dependent pairs settle.
            let _ = std::fs::write(file, value);
        }
    }
}

/// Applies `resources` to the cgroup of running, created or paused container `id`.
pub fn update(root: &Path, id: &str, resources: &LinuxResources) -> Result<()> {
    let st = crate::container::state(root, id)?;
    if st.oci.status == Status::Stopped {
        return Err(Error::WrongState {
            id: id.to_string(),
            status: st.oci.status.to_string(),
            action: "update",
        });
    }
    let cgroup = Cgroup::open(&st.cgroup_path, &st.cgroup_driver)?;
    let saved = snapshot(&st.cgroup_path);
    if let Err(e) = cgroup.apply_resources(resources) {
        restore(&saved);
        return Err(e);
    }
    Ok(())
}
