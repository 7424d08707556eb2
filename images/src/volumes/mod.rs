//! Named volumes: directories that outlive containers, made on first use, seeded once from
//! the image's content at the mount path, and tracked by the containers that use them so
//! that a volume in use is never removed from under one.
//!
//! ```text
//! DATA/volumes/NAME/_data        the content containers mount
//! DATA/volumes/NAME/volume.json  name, created, labels, whether seeding is still due
//! DATA/volumes/NAME/users/ID     one empty file per container that mounts the volume
//! DATA/volumes/.locks/NAME       flock per volume, held to create, seed, use or remove it
//! DATA/volumes/.tmp/             volumes being made or removed (renamed in or out whole)
//! ```
//!
//! Lock files are never deleted: a process waiting on an unlinked lock file would hold a lock
//! nobody else sees. Names start with a letter or digit, so they never clash with `.locks`.

mod mounts;
mod seed;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::fsutil::{IoError, io_err, lock_file, remove_tree};

pub use mounts::{
    MountRequest, MountSource, check_bind_source, check_targets, clean_target, oci_mounts,
};

/// The longest volume name: it is a file name under DATA/volumes.
pub const MAX_NAME_LEN: usize = berth_proto::mount_paths::MAX_VOLUME_NAME_LEN;

/// What went wrong with a volume or a mount request, naming it.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "invalid volume name {0:?}: a name starts with a letter or digit and has only letters, \
         digits, '_', '.' and '-' (at most 255)"
    )]
    BadName(String),
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("volume {0} already exists")]
    AlreadyExists(String),
    #[error("volume {name} is in use by container {}; remove it first or force", users.join(", "))]
    InUse { name: String, users: Vec<String> },
    #[error("volume {name}: {path} is not valid: {source}")]
    Corrupt {
        name: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A mount request refused: `origin` is what the caller gave (a flag and its value, or a
    /// spec field), so that the message points at it.
    #[error("{origin}: {reason}")]
    BadMount { origin: String, reason: String },
    #[error(transparent)]
    Io(#[from] IoError),
}

impl VolumeError {
    /// What kind of failure this is (see [`crate::ErrorKind`]).
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            Self::BadName(_) | Self::BadMount { .. } => K::InvalidArgument,
            Self::NotFound(_) => K::NotFound,
            Self::AlreadyExists(_) => K::AlreadyExists,
            Self::InUse { .. } => K::Conflict,
            Self::Corrupt { .. } => K::DataLoss,
            Self::Io(_) => K::Internal,
        }
    }
}

pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// Checks a volume name against podman's rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn validate_name(name: &str) -> Result<()> {
    if berth_proto::mount_paths::valid_volume_name(name) {
        Ok(())
    } else {
        Err(VolumeError::BadName(name.to_string()))
    }
}

/// A volume as `inspect` and `ls` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    /// The directory containers mount (`DATA/volumes/NAME/_data`).
    pub mountpoint: PathBuf,
    /// RFC 3339, UTC.
    pub created: String,
    pub labels: BTreeMap<String, String>,
    /// The containers that mount it, by id, sorted.
    pub in_use_by: Vec<String>,
}

/// volume.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    name: String,
    created: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// True until the first container mounts it: that mount seeds it from the image.
    #[serde(default)]
    needs_seed: bool,
}

/// The volumes under one data directory.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
}

/// Makes the names of directories in `.tmp` unique within this process (the pid does across).
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl VolumeStore {
    /// Opens the store under `data_dir`, making its directories if needed.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        let store = Self {
            dir: data_dir.as_ref().join("volumes"),
        };
        for dir in [store.dir.join(".locks"), store.dir.join(".tmp")] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(store)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where a volume's content lives (and containers mount it from).
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.path(name).join("_data")
    }

    fn lock(&self, name: &str) -> Result<Flock<File>> {
        let path = self.dir.join(".locks").join(name);
        Ok(lock_file(path, FlockArg::LockExclusive)?)
    }

    fn tmp_path(&self, name: &str) -> PathBuf {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(".tmp")
            .join(format!("{name}.{}.{seq}", std::process::id()))
    }

    /// volume.json of `name`, or None when there is no such volume.
    fn read_record(&self, name: &str) -> Result<Option<Record>> {
        let path = self.path(name).join("volume.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e).into()),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| VolumeError::Corrupt {
                name: name.to_string(),
                path,
                source,
            })
    }

    fn write_record(&self, dir: &Path, record: &Record) -> Result<()> {
        let path = dir.join("volume.json");
        let bytes = serde_json::to_vec_pretty(record).expect("a record serialises");
        berth_runtime::sys::fs::atomic_write(&path, &bytes).map_err(io_err("write", &path))?;
        Ok(())
    }

    /// Makes the volume whole in `.tmp` and renames it into place, so that a crash never
    /// leaves a half-made volume under its name. The caller holds the volume's lock.
    fn make_locked(&self, name: &str, labels: BTreeMap<String, String>) -> Result<Record> {
        let tmp = self.tmp_path(name);
        for dir in [tmp.join("_data"), tmp.join("users")] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        let record = Record {
            name: name.to_string(),
            created: berth_runtime::state::rfc3339_now(),
            labels,
            needs_seed: true,
        };
        self.write_record(&tmp, &record)?;
        let dest = self.path(name);
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = remove_tree(&tmp);
            return Err(io_err("move into place", dest)(e).into());
        }
        tracing::debug!(volume = name, "volume created");
        Ok(record)
    }

    /// Creates a volume; refuses a name already taken.
    pub fn create(&self, name: &str, labels: BTreeMap<String, String>) -> Result<Volume> {
        validate_name(name)?;
        let _lock = self.lock(name)?;
        if self.read_record(name)?.is_some() {
            return Err(VolumeError::AlreadyExists(name.to_string()));
        }
        let record = self.make_locked(name, labels)?;
        self.volume(record)
    }

    fn users(&self, name: &str) -> Result<Vec<String>> {
        let dir = self.path(name).join("users");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e).into()),
        };
        let mut users = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            users.push(entry.file_name().to_string_lossy().into_owned());
        }
        users.sort();
        Ok(users)
    }

    fn volume(&self, record: Record) -> Result<Volume> {
        Ok(Volume {
            mountpoint: self.mountpoint(&record.name),
            in_use_by: self.users(&record.name)?,
            name: record.name,
            created: record.created,
            labels: record.labels,
        })
    }

    /// One volume.
    pub fn inspect(&self, name: &str) -> Result<Volume> {
        validate_name(name)?;
        let record = self
            .read_record(name)?
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))?;
        self.volume(record)
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        for name in self.names()? {
            // Removed meanwhile, or a directory that is not a volume: not listed.
            if let Some(record) = self.read_record(&name)? {
                out.push(self.volume(record)?);
            }
        }
        Ok(out)
    }

    fn names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_name(&name).is_ok() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes a volume and its content; one in use only with `force` (its containers keep
    /// what they mounted until they end, but the files are gone).
    pub fn remove(&self, name: &str, force: bool) -> Result<()> {
        validate_name(name)?;
        let _lock = self.lock(name)?;
        if self.read_record(name)?.is_none() {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        let users = self.users(name)?;
        if !users.is_empty() && !force {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                users,
            });
        }
        self.remove_locked(name)
    }

    /// Renames the volume out of sight first, so that it is either whole or gone.
    fn remove_locked(&self, name: &str) -> Result<()> {
        let tmp = self.tmp_path(name);
        let path = self.path(name);
        fs::rename(&path, &tmp).map_err(io_err("move aside", &path))?;
        remove_tree(&tmp)?;
        tracing::debug!(volume = name, "volume removed");
        Ok(())
    }

    /// Removes every volume no container uses; returns their names.
    pub fn prune(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for name in self.names()? {
            let _lock = self.lock(&name)?;
            if self.read_record(&name)?.is_some() && self.users(&name)?.is_empty() {
                self.remove_locked(&name)?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Makes `user` (a container id) a user of the volume `name`, creating the volume if
    /// there is none; the first use copies `seed_from` (the image's directory at the mount
    /// path) into it. Returns the directory to mount. Under the volume's lock, so that two
    /// first uses make one volume, seed it once, and a removal sees the user or goes first.
    pub fn attach(&self, name: &str, user: &str, seed_from: Option<&Path>) -> Result<PathBuf> {
        validate_name(name)?;
        if user.is_empty() || user.starts_with('.') || user.contains('/') {
            return Err(VolumeError::BadName(user.to_string()));
        }
        let _lock = self.lock(name)?;
        let mut record = match self.read_record(name)? {
            Some(record) => record,
            None => self.make_locked(name, BTreeMap::new())?,
        };
        let dir = self.path(name);
        let marker = dir.join("users").join(user);
        File::create(&marker).map_err(io_err("create", &marker))?;
        if record.needs_seed {
            if let Some(src) = seed_from {
                seed::seed(src, &dir)?;
            }
            record.needs_seed = false;
            self.write_record(&dir, &record)?;
        }
        Ok(self.mountpoint(name))
    }

    /// Ends `user`'s use of every volume (its container is gone). Missing records are fine:
    /// the container may have failed before it attached any.
    pub fn release(&self, user: &str) -> Result<()> {
        for name in self.names()? {
            let marker = self.path(&name).join("users").join(user);
            match fs::remove_file(&marker) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", marker)(e).into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
