//! Path confinement: every tar path is resolved inside the target root, as a container would.
//!
//! Policy (the same for entry paths, hard link targets and whiteouts):
//! - Entry names are cleaned lexically first: empty and `.` components are dropped, `..` pops a
//!   component and stops at the root, a leading `/` is ignored. So `../../etc/x` and `/etc/x`
//!   both mean `ROOT/etc/x` (clamped, never refused), as containerd and umoci do.
//! - Parent directories are opened with `openat2(RESOLVE_IN_ROOT)` relative to the root's fd:
//!   the kernel follows symlinks in them but treats `/` and `..` at the root as the root itself.
//!   An entry written through `evil -> /etc` or `evil -> ../../..` lands in `ROOT/etc` or `ROOT`.
//! - The last component is always acted on with `*at` calls that do not follow it (O_NOFOLLOW,
//!   AT_SYMLINK_NOFOLLOW, linkat without AT_SYMLINK_FOLLOW), so no entry writes through a
//!   symlink it names itself.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, mkdirat};

/// A tar path cleaned lexically into a relative path of normal components; empty means the root.
pub(super) fn clean(raw: &[u8]) -> PathBuf {
    let mut out = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Splits a cleaned, non-empty path into its parent and last component.
pub(super) fn split(rel: &Path) -> Option<(&Path, &OsStr)> {
    Some((rel.parent()?, rel.file_name()?))
}

/// A directory tree that entries are confined to, with the last opened directory kept open
/// (tar streams list a directory's children right after it).
#[derive(Debug)]
pub(super) struct Root {
    fd: OwnedFd,
    path: PathBuf,
    cached: Option<(PathBuf, OwnedFd)>,
    /// Set by `forget`: the cached fd is dropped at the next lookup, not at once, because the
    /// caller may still be using it (its raw value) for the entry in hand.
    stale: bool,
}

impl Root {
    pub(super) fn open(path: &Path) -> Result<Self, Errno> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            // SAFETY: `open` just returned this fd and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
            cached: None,
            stale: false,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Opens directory `rel` inside the root (symlinks followed within the root); the last
    /// component is followed too, since `rel` names a parent directory.
    pub(super) fn open_dir(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        self.open_in_root(rel, OFlag::empty())
    }

    /// Opens directory `rel` without following a symlink in its last component.
    pub(super) fn open_dir_nofollow(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        self.open_in_root(rel, OFlag::O_NOFOLLOW)
    }

    fn open_in_root(&self, rel: &Path, extra: OFlag) -> Result<OwnedFd, Errno> {
        let target: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | extra)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(self.fd.as_raw_fd(), target, how)?;
        // SAFETY: `openat2` just returned this fd and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The directory `rel` (a cleaned path) as an fd, creating missing directories inside the
    /// root; `created` hears of each directory made. The fd stays cached until `forget`.
    pub(super) fn dir(
        &mut self,
        rel: &Path,
        created: &mut dyn FnMut(&Path),
    ) -> Result<RawFd, Errno> {
        if self.stale {
            self.cached = None;
            self.stale = false;
        }
        if let Some((cached, fd)) = &self.cached
            && cached == rel
        {
            return Ok(fd.as_raw_fd());
        }
        let fd = self.ensure_dir(rel, created)?;
        let raw = fd.as_raw_fd();
        self.cached = Some((rel.to_path_buf(), fd));
        Ok(raw)
    }

    /// Keeps an open directory as the cached one (a directory entry just created).
    pub(super) fn remember(&mut self, rel: PathBuf, fd: OwnedFd) {
        self.cached = Some((rel, fd));
        self.stale = false;
    }

    /// Drops the cached directory: called whenever an entry removes or replaces anything, since
    /// the cached path might then name another directory.
    pub(super) fn forget(&mut self) {
        self.stale = true;
    }

    fn ensure_dir(&self, rel: &Path, created: &mut dyn FnMut(&Path)) -> Result<OwnedFd, Errno> {
        match self.open_dir(rel) {
            Err(Errno::ENOENT) => {}
            other => return other,
        }
        let Some((parent, name)) = split(rel) else {
            return Err(Errno::ENOENT);
        };
        let parent_fd = self.ensure_dir(parent, created)?;
        match mkdirat(
            Some(parent_fd.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) => created(rel),
            // Made meanwhile, or a dangling symlink: the open below says which.
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        self.open_dir(rel)
    }
}

/// `/proc/self/fd/DIRFD/NAME`: lets path-only calls (lsetxattr) act on `NAME` in an open
/// directory without resolving any path component again.
pub(super) fn proc_path(dir_fd: RawFd, name: &OsStr) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{dir_fd}"));
    path.push(name);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_clamps_parent_components_and_absolute_paths() {
        assert_eq!(clean(b"../../etc/passwd"), PathBuf::from("etc/passwd"));
        assert_eq!(clean(b"/abs/./x//y"), PathBuf::from("abs/x/y"));
        assert_eq!(clean(b"a/../../b"), PathBuf::from("b"));
        assert_eq!(clean(b"./"), PathBuf::new());
    }

    #[test]
    fn symlinks_to_outside_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir_all(root_path.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root_path.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root_path.join("up")).unwrap();
        let mut root = Root::open(&root_path).unwrap();
        let fd = root.dir(Path::new("abs"), &mut |_| {}).unwrap();
        let abs = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(abs, root_path.join("etc"));
        root.forget();
        let fd = root.dir(Path::new("up/made"), &mut |_| {}).unwrap();
        let made = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(made, root_path.join("made"));
    }
}
