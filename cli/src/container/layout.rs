//! Where a local container's files live, its metadata and exit record, and its status.
//!
//! ```text
//! DATA/containers/ID/config.json  the runtime bundle (root.path points at the rootfs below)
//! DATA/containers/ID/meta.json    name, image, command, created, owner pid, --rm
//! DATA/containers/ID/exit.json    the exit code, once the process has ended (berth_shim's format)
//! DATA/containers/ID/ctr.log      a detached container's output, and the other files of its
//!                                 berth-shim (berth_shim::ShimPaths: ctr.log.N, shim.json, ...)
//! DATA/rootfs/ID/                 the overlay root filesystem (seen by image prune)
//! DATA/run/ID/                    the runtime's state
//! DATA/volumes/NAME/users/ID      its use of a named volume (berth_images::volumes)
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use berth_shim::{ExitRecord, ShimPaths};
use serde::{Deserialize, Serialize};

/// The paths of one container.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub id: String,
    pub data_dir: PathBuf,
    pub dir: PathBuf,
    pub snapshot: PathBuf,
    pub runtime_root: PathBuf,
}

impl Paths {
    pub(crate) fn new(data_dir: &Path, id: &str) -> Self {
        Self {
            id: id.to_string(),
            data_dir: data_dir.to_path_buf(),
            dir: containers_dir(data_dir).join(id),
            // As `berth_images::snapshot::snapshots_dir`, which needs an open store.
            snapshot: data_dir.join("rootfs").join(id),
            runtime_root: runtime_root(data_dir),
        }
    }
    pub(crate) fn meta(&self) -> PathBuf {
        self.dir.join("meta.json")
    }
    /// The files a detached container's berth-shim writes (and exit.json, which a
    /// foreground `berth run` writes in the same format).
    pub(crate) fn shim(&self) -> ShimPaths {
        ShimPaths {
            id: self.id.clone(),
            dir: self.dir.clone(),
            runtime_root: self.runtime_root.clone(),
        }
    }
}

pub(crate) fn containers_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("containers")
}

pub(crate) fn runtime_root(data_dir: &Path) -> PathBuf {
    data_dir.join("run")
}

/// What `berth run` records about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub created: String,
    /// The `berth run` that made the container (and, in the foreground, waits for it); a
    /// detached container's owner is its berth-shim ([`owner_pid`]).
    pub owner_pid: i32,
    pub remove: bool,
    pub detached: bool,
}

/// Writes JSON crash-safely ([`berth_runtime::sys::fs::atomic_write`]).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    berth_runtime::sys::fs::atomic_write(path, &serde_json::to_vec(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

pub(crate) fn read_meta(paths: &Paths) -> anyhow::Result<Meta> {
    read_json(&paths.meta())
}

/// exit.json, if the container has ended (and the record is readable).
pub(crate) fn read_exit(paths: &Paths) -> Option<ExitRecord> {
    berth_shim::read_exit(&paths.shim()).ok().flatten()
}

/// A container's status as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Created,
    Running,
    Exited(i32),
    /// Neither running nor recorded as exited: its owner died.
    Dead,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Created => f.write_str("created"),
            Status::Running => f.write_str("running"),
            Status::Exited(code) => write!(f, "exited({code})"),
            Status::Dead => f.write_str("dead"),
        }
    }
}

pub(crate) fn status(paths: &Paths, meta: &Meta) -> Status {
    if let Some(exit) = read_exit(paths) {
        return Status::Exited(exit.exit_code);
    }
    match berth_runtime::state(&paths.runtime_root, &paths.id) {
        Ok(st) => match st.oci.status {
            berth_runtime::state::Status::Running | berth_runtime::state::Status::Paused => {
                Status::Running
            }
            berth_runtime::state::Status::Stopped => Status::Dead,
            _ => Status::Created,
        },
        // No runtime state yet: still being set up while its owner lives.
        Err(_) if process_alive(owner_pid(paths, meta)) => Status::Created,
        Err(_) => Status::Dead,
    }
}

/// The process that waits for the container, reaps it and records its exit: the berth-shim
/// named in shim.json once a detached container runs, else the `berth run` that made it.
pub(crate) fn owner_pid(paths: &Paths, meta: &Meta) -> i32 {
    berth_shim::read_state(&paths.shim())
        .ok()
        .flatten()
        .and_then(|state| i32::try_from(state.shim_pid).ok())
        .unwrap_or(meta.owner_pid)
}

pub(crate) fn process_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Every container's paths and metadata, oldest first.
pub(crate) fn list(data_dir: &Path) -> anyhow::Result<Vec<(Paths, Meta)>> {
    let dir = containers_dir(data_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().map(String::from) else {
            continue;
        };
        let paths = Paths::new(data_dir, &id);
        // No meta.json: a run still setting up or a removal in progress.
        if let Ok(meta) = read_meta(&paths) {
            out.push((paths, meta));
        }
    }
    out.sort_by(|a, b| a.1.created.cmp(&b.1.created));
    Ok(out)
}

/// Finds a container by id, name or unique id prefix.
pub(crate) fn find(data_dir: &Path, key: &str) -> anyhow::Result<(Paths, Meta)> {
    let all = list(data_dir)?;
    if let Some(found) = all.iter().find(|(_, m)| m.id == key || m.name == key) {
        return Ok(found.clone());
    }
    let prefixed: Vec<_> = all.iter().filter(|(_, m)| m.id.starts_with(key)).collect();
    match prefixed.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no such container: {key}"),
        _ => bail!("container id prefix {key} is ambiguous"),
    }
}
