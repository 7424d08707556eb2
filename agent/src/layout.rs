//! Where the agent keeps each container's files, the runtime's state and the network's.
//!
//! ```text
//! DATA/agent/containers/ID/assignment.pb  the scheduler's assignment (protobuf)
//! DATA/agent/containers/ID/config.json    the runtime bundle (root.path -> DATA/rootfs/ID)
//! DATA/agent/containers/ID/record.json    the agent's record: restarts, last exit, reason
//! DATA/agent/containers/ID/shim.json      written by the shim: its pid, the container's pid
//! DATA/agent/containers/ID/exit.json      written by the shim when the container ended
//! DATA/agent/containers/ID/ctr.log        output (ctr.log.1 .. ctr.log.N: older parts)
//! DATA/agent/containers/ID/files/         its configs, bound read-only into the container
//! DATA/agent/containers/ID/private/       its tmpfs (0700): secrets/ bound at /run/secrets,
//!                                         and config.json when its env holds a secret
//!                                         (then the bundle's config.json links there)
//! DATA/agent/run/                         the runtime's state (--root of berth-runtime)
//! DATA/agent/netns/ID                     the container's network namespace (bind mount)
//! DATA/agent/net/                         IPAM leases and port reservations
//! DATA/rootfs/ID/                         the overlay root filesystem (the image store's)
//! ```

use std::path::{Path, PathBuf};

/// Whether `id` is safe as a container id: it becomes a directory, a netns file and a cgroup
/// name, so only 1 to 128 letters, digits, '-', '_' or '.', starting with a letter or digit.
pub fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The agent's directories under one data dir.
#[derive(Debug, Clone)]
pub struct Layout {
    pub data_dir: PathBuf,
    pub root: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            root: data_dir.join("agent"),
        }
    }
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn container(&self, id: &str) -> ContainerPaths {
        ContainerPaths {
            id: id.to_string(),
            dir: self.containers().join(id),
            rootfs: self.data_dir.join("rootfs").join(id),
            runtime_root: self.runtime_root(),
            netns: self.netns_dir().join(id),
        }
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn netns_dir(&self) -> PathBuf {
        self.root.join("netns")
    }
    pub fn net_dir(&self) -> PathBuf {
        self.root.join("net")
    }
}

/// The paths of one container.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    pub id: String,
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub runtime_root: PathBuf,
    pub netns: PathBuf,
}

impl ContainerPaths {
    pub fn assignment(&self) -> PathBuf {
        self.dir.join("assignment.pb")
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("record.json")
    }
    /// The configs written for the container.
    pub fn files(&self) -> PathBuf {
        self.dir.join("files")
    }
    /// The container's own tmpfs on the host: secrets, never on disk.
    pub fn private(&self) -> PathBuf {
        self.dir.join("private")
    }
    /// The shim's files in the container's directory (shim.json, exit.json, ctr.log, ...).
    pub fn shim(&self) -> berth_shim::ShimPaths {
        berth_shim::ShimPaths {
            id: self.id.clone(),
            dir: self.dir.clone(),
            runtime_root: self.runtime_root.clone(),
        }
    }
    /// The container's output, as the shim writes it.
    pub fn log(&self) -> PathBuf {
        self.shim().log()
    }
    /// The n-th older log part (1 = the most recent before ctr.log).
    pub fn old_log(&self, n: u32) -> PathBuf {
        self.shim().old_log(n)
    }
}
