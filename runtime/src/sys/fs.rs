//! Crash-safe file replacement: readers see the old file or the new one, never half of one,
//! and once the call returns the new one survives a crash (the file and then the directory
//! entry are fsynced).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How [`atomic_write_with`] creates the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Permission bits at creation (before the umask): a secret is never readable by others,
    /// not even briefly.
    pub mode: u32,
    /// Whether an existing file at the path is replaced; if not, an existing one is an
    /// `AlreadyExists` error and stays as it was.
    pub replace: bool,
    /// Whether the file and the directory are fsynced. Only state on a volatile filesystem
    /// (the runtime's under /run, gone at reboot anyway) skips it: a process crash loses
    /// nothing from the page cache, and fsync costs milliseconds on the create path.
    pub durable: bool,
}

impl Default for WriteOptions {
    /// What `fs::write` would create (0666 before the umask), replacing an existing file.
    fn default() -> Self {
        WriteOptions {
            mode: 0o666,
            replace: true,
            durable: true,
        }
    }
}

/// [`atomic_write_with`] options for state that need not survive a reboot: replaced
/// atomically, not fsynced.
pub const VOLATILE: WriteOptions = WriteOptions {
    mode: 0o666,
    replace: true,
    durable: false,
};

/// Writes `bytes` to `path` through a temporary file in the same directory: write, fsync the
/// file, rename it over `path`, fsync the directory. On error no temporary file is left.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    atomic_write_with(path, bytes, WriteOptions::default())
}

/// [`atomic_write`] with a creation mode and, unless `replace`, refusal to overwrite (the
/// temporary file is hard-linked into place, which fails when the name exists).
pub fn atomic_write_with(path: &Path, bytes: &[u8], opts: WriteOptions) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_path(path)?;
    let result = write_file(&tmp, bytes, opts).and_then(|()| {
        if opts.replace {
            fs::rename(&tmp, path)
        } else {
            fs::hard_link(&tmp, path)
        }
    });
    // After a rename the temporary name is gone; after a link, or on failure, remove it.
    if result.is_err() || !opts.replace {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if opts.durable { sync_dir(dir) } else { Ok(()) }
}

/// fsyncs a directory, so that a rename or link into it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A name beside `path` that no other writer (thread or process) uses at the same time.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    Ok(parent_dir(path).join(format!(
        ".{}.tmp-{}-{seq}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn write_file(tmp: &Path, bytes: &[u8], opts: WriteOptions) -> io::Result<()> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(opts.mode)
            .open(tmp)
    };
    let mut file = match create() {
        // Left by a crashed process that had the same pid: it is ours to replace.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp)?;
            create()?
        }
        r => r?,
    };
    file.write_all(bytes)?;
    if opts.durable {
        file.sync_all()
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::{WriteOptions, atomic_write, atomic_write_with};

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_and_replaces_leaving_only_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(names(dir.path()), ["state.json"]);
    }

    #[test]
    fn a_volatile_write_replaces_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        atomic_write_with(&path, b"1", super::VOLATILE).unwrap();
        atomic_write_with(&path, b"22", super::VOLATILE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"22");
        assert_eq!(names(dir.path()), ["pid"]);
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory where the file should go: the rename fails.
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"x").unwrap();
        assert!(atomic_write(&path, b"new").is_err());
        assert_eq!(names(dir.path()), ["taken"]);
        assert_eq!(names(&path), ["inside"]);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = atomic_write(&dir.path().join("no/such/file"), b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn without_replace_an_existing_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let keep = WriteOptions {
            mode: 0o600,
            replace: false,
            ..WriteOptions::default()
        };
        atomic_write_with(&path, b"one", keep).unwrap();
        let err = atomic_write_with(&path, b"two", keep).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(names(dir.path()), ["key.pem"]);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_directory_of_a_bare_name_is_the_current_one() {
        assert_eq!(super::parent_dir(Path::new("x")), Path::new("."));
        assert_eq!(super::parent_dir(Path::new("/a/x")), Path::new("/a"));
    }
}
