//! Small filesystem helpers shared by the store, unpacking and snapshots.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A failed filesystem operation: what was being done, and to which path.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// For `map_err`: names the operation and path an `io::Error` came from.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> IoError {
    let path = path.into();
    move |source| IoError { op, path, source }
}

/// Opens (creating) the lock file `path` and takes `kind` of flock on it; the lock is held
/// until the returned guard is dropped.
pub(crate) fn lock_file(
    path: PathBuf,
    kind: nix::fcntl::FlockArg,
) -> Result<nix::fcntl::Flock<fs::File>, IoError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open lock", &path))?;
    nix::fcntl::Flock::lock(file, kind).map_err(|(_, errno)| IoError {
        op: "lock",
        path,
        source: errno.into(),
    })
}

/// Removes a file or directory tree without following symlinks; returns the bytes it held.
/// A missing path is not an error.
pub(crate) fn remove_tree(path: &Path) -> Result<u64, IoError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("stat", path)(e)),
    };
    if !meta.is_dir() {
        fs::remove_file(path).map_err(io_err("remove", path))?;
        return Ok(meta.size());
    }
    let mut freed = 0;
    for entry in fs::read_dir(path).map_err(io_err("list", path))? {
        let entry = entry.map_err(io_err("list", path))?;
        freed += remove_tree(&entry.path())?;
    }
    fs::remove_dir(path).map_err(io_err("remove directory", path))?;
    Ok(freed)
}
