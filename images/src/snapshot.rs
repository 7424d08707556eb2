//! Container root filesystems: an overlay mount of an image's unpacked layers with a private
//! upper directory, or a flattened copy where overlayfs is unavailable.
//!
//! ```text
//! DIR/layers.json   the image and its diff_ids (read by `layers_in_use`, so prune keeps them)
//! DIR/rootfs        the mount point (overlay) or the flattened tree (copy)
//! DIR/upper DIR/work  overlay upper and work directories
//! ```

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};
use serde::{Deserialize, Serialize};

use crate::fsutil::{IoError, io_err};
use crate::progress::Progress;
use crate::store::{Image, PruneReport, Store, StoreError};
use crate::unpack::{UnpackError, UnpackOptions, ensure_layers, unpack_flat};

const RECORD: &str = "layers.json";

/// How a root filesystem was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootfsKind {
    Overlay,
    Copy,
}

/// Options for `prepare_rootfs_with`.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    pub unpack: UnpackOptions,
    /// Skip overlayfs and make a flattened copy (the fallback, forced).
    pub force_copy: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Unpack(Box<UnpackError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] crate::fsutil::IoError),
    #[error("snapshot record {path} is invalid: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("snapshot directory {0} already holds a root filesystem")]
    Exists(PathBuf),
}

impl From<UnpackError> for SnapshotError {
    fn from(e: UnpackError) -> Self {
        Self::Unpack(Box::new(e))
    }
}

/// What `DIR/layers.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub image: String,
    pub kind: RootfsKind,
    /// `sha256:<hex>` of each layer, bottom first.
    pub diff_ids: Vec<String>,
}

/// A prepared root filesystem. Dropping it leaves it in place (containers outlive the process
/// that made them); `remove` takes it down.
#[derive(Debug)]
pub struct Rootfs {
    dir: PathBuf,
    rootfs: PathBuf,
    kind: RootfsKind,
}

/// Where berth keeps container root filesystems: snapshots under it are seen by
/// `layers_in_use`, so `berth image prune` keeps their layers.
pub fn snapshots_dir(store: &Store) -> PathBuf {
    store.data_dir().join("rootfs")
}

/// Prepares a root filesystem for `image` in `dir` (created; it must not hold one already).
pub fn prepare_rootfs(
    store: &Store,
    image: &Image,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<Rootfs, SnapshotError> {
    prepare_rootfs_with(store, image, dir, &SnapshotOptions::default(), progress)
}

pub fn prepare_rootfs_with(
    store: &Store,
    image: &Image,
    dir: &Path,
    opts: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<Rootfs, SnapshotError> {
    let record_path = dir.join(RECORD);
    if record_path.exists() {
        return Err(SnapshotError::Exists(dir.to_path_buf()));
    }
    // Held until the record is written: prune cannot remove a layer between the two.
    let _guard = store.write_guard()?;
    let layers = if opts.force_copy {
        Vec::new()
    } else {
        ensure_layers(store, image, &opts.unpack, progress)?
    };
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(io_err("create directory", &rootfs))?;
    let mut record = SnapshotRecord {
        image: image.name.clone(),
        kind: RootfsKind::Overlay,
        diff_ids: image.config.rootfs().diff_ids().clone(),
    };
    write_record(&record_path, &record)?;
    let made = if opts.force_copy {
        None
    } else {
        match mount_overlay_rootfs(dir, &layers) {
            Ok(()) => Some(RootfsKind::Overlay),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "overlay mount failed; making a flattened copy");
                None
            }
        }
    };
    let kind = match made {
        Some(kind) => kind,
        None => {
            for sub in ["upper", "work"] {
                let _ = fs::remove_dir_all(dir.join(sub));
            }
            let _ = fs::remove_dir(&rootfs);
            if let Err(e) = unpack_flat(store, image, &rootfs, &opts.unpack, progress) {
                let _ = fs::remove_dir_all(dir);
                return Err(e.into());
            }
            record.kind = RootfsKind::Copy;
            write_record(&record_path, &record)?;
            RootfsKind::Copy
        }
    };
    Ok(Rootfs {
        dir: dir.to_path_buf(),
        rootfs,
        kind,
    })
}

fn write_record(path: &Path, record: &SnapshotRecord) -> Result<(), SnapshotError> {
    let bytes = serde_json::to_vec(record).map_err(|source| SnapshotError::Record {
        path: path.to_path_buf(),
        source,
    })?;
    // Temp file and rename: a reader never sees half a record.
    Ok(berth_runtime::sys::fs::atomic_write(path, &bytes).map_err(io_err("write", path))?)
}

fn read_record(path: &Path) -> Result<SnapshotRecord, SnapshotError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Record {
        path: path.to_path_buf(),
        source,
    })
}

/// Mounts overlay at DIR/rootfs; on failure nothing stays mounted.
fn mount_overlay_rootfs(dir: &Path, layers: &[PathBuf]) -> io::Result<()> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    for sub in [&upper, &work] {
        fs::create_dir_all(sub)?;
    }
    // The merged root's own mode comes from the upper directory.
    fs::set_permissions(&upper, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    // Top layer first, each once (a repeated layer changes nothing above its top occurrence).
    let mut seen = BTreeSet::new();
    let lowers: Vec<&PathBuf> = layers
        .iter()
        .rev()
        .filter(|l| seen.insert(l.as_path()))
        .collect();
    mount_overlay(&lowers, &upper, &work, &dir.join("rootfs"), &[])
}

/// Mounts overlay at `target`: `lowers` top first, `options` extra (key, value) settings.
/// On failure nothing stays mounted.
pub(crate) fn mount_overlay(
    lowers: &[&PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    options: &[(&str, &str)],
) -> io::Result<()> {
    match mount_with_fsconfig(lowers, upper, work, target, options) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            mount_legacy(lowers, upper, work, target, options)
        }
        Err(e) => Err(e),
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

// The new mount API (Linux 5.2+; "lowerdir+" since 6.8): each lower directory is its own
// fsconfig call, so the one-page limit of mount(2)'s data does not cap the layer count.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

fn syscall_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(ret)
        .map_err(|_| io::Error::other(format!("the kernel returned {ret}, not a descriptor")))?;
    // SAFETY: a non-negative return of fsopen/fsmount is a new fd that only we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fsconfig_string(fs: &OwnedFd, key: &str, value: &CString) -> io::Result<()> {
    let key = CString::new(key).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: key and value are NUL-terminated strings alive for the call; the kernel copies them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("fsconfig {key:?}={value:?}: {e}"),
        ));
    }
    Ok(())
}

fn mount_with_fsconfig(
    lowers: &[&PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    options: &[(&str, &str)],
) -> io::Result<()> {
    let name = c"overlay";
    // SAFETY: `name` is a NUL-terminated static string; fsopen returns a new fd or -1.
    let fs = syscall_fd(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
    for lower in lowers {
        fsconfig_string(&fs, "lowerdir+", &cstring(lower)?)?;
    }
    fsconfig_string(&fs, "upperdir", &cstring(upper)?)?;
    fsconfig_string(&fs, "workdir", &cstring(work)?)?;
    for (key, value) in options {
        let value =
            CString::new(*value).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        fsconfig_string(&fs, key, &value)?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value (null pointers are what it expects).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain integer arguments; returns a new fd or -1.
    let mnt = syscall_fd(unsafe {
        libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0)
    })?;
    let target = cstring(target)?;
    let empty = c"";
    // SAFETY: `empty` and `target` are NUL-terminated strings alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// mount(2) with absolute paths, for kernels without the new API; refuses options longer
/// than a page rather than letting the kernel truncate them.
fn mount_legacy(
    lowers: &[&PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    options: &[(&str, &str)],
) -> io::Result<()> {
    let lowerdir: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    );
    for (key, value) in options {
        data.push_str(&format!(",{key}={value}"));
    }
    if data.len() >= 4096 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "overlay mount options exceed one page",
        ));
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(io::Error::from)
}

impl Rootfs {
    /// Reattaches to a root filesystem prepared earlier (by this or another process).
    pub fn open(dir: &Path) -> Result<Self, SnapshotError> {
        let record = read_record(&dir.join(RECORD))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            rootfs: dir.join("rootfs"),
            kind: record.kind,
        })
    }

    /// The container's root directory.
    pub fn path(&self) -> &Path {
        &self.rootfs
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn kind(&self) -> RootfsKind {
        self.kind
    }

    /// Unmounts and removes the snapshot directory. A busy mount (a process still has files
    /// open in it) is detached lazily: the kernel frees it when the last user goes.
    pub fn remove(self) -> Result<(), SnapshotError> {
        if self.kind == RootfsKind::Overlay {
            match umount2(&self.rootfs, MntFlags::empty()) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(Errno::EBUSY) => {
                    tracing::warn!(rootfs = %self.rootfs.display(), "root filesystem busy; detaching it lazily");
                    umount2(&self.rootfs, MntFlags::MNT_DETACH).map_err(|e| {
                        SnapshotError::Io(IoError {
                            op: "detach mount",
                            path: self.rootfs.clone(),
                            source: e.into(),
                        })
                    })?;
                }
                Err(e) => {
                    return Err(SnapshotError::Io(IoError {
                        op: "unmount",
                        path: self.rootfs.clone(),
                        source: e.into(),
                    }));
                }
            }
        }
        crate::fsutil::remove_tree(&self.dir)?;
        Ok(())
    }
}

/// The hex diff_ids of every layer used by a snapshot under `snapshots_dir(store)`.
/// `Store::prune`, keeping every layer a container root filesystem still uses.
pub fn prune(store: &Store) -> Result<PruneReport, SnapshotError> {
    store.prune(|| layers_in_use(store))
}

pub fn layers_in_use(store: &Store) -> Result<BTreeSet<String>, SnapshotError> {
    let dir = snapshots_dir(store);
    let mut in_use = BTreeSet::new();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(in_use),
        Err(e) => return Err(io_err("list", &dir)(e).into()),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list", &dir))?;
        let path = entry.path().join(RECORD);
        let record = match read_record(&path) {
            Ok(record) => record,
            // A directory being set up or torn down: nothing recorded, nothing to keep.
            Err(SnapshotError::Io(IoError { source, .. }))
                if source.kind() == io::ErrorKind::NotFound =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        in_use.extend(
            record
                .diff_ids
                .iter()
                .map(|d| d.strip_prefix("sha256:").unwrap_or(d).to_string()),
        );
    }
    Ok(in_use)
}
