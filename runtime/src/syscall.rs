//! The narrow set of system calls that build a container's root filesystem, behind a trait so
//! the ordering logic can be unit-tested against a recording fake.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use crate::error::{Error, Result};

/// The system calls the rootfs code makes.
pub(crate) trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()>;
    fn chroot(&self, path: &Path) -> Result<()>;
    fn chdir(&self, path: &Path) -> Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()>;
    fn chown(&self, path: &Path, uid: Option<Uid>, gid: Option<Gid>) -> Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    /// Creates `path` and its parents as directories; existing ones are fine.
    fn mkdir_all(&self, path: &Path) -> Result<()>;
    /// Creates an empty file at `path` (a bind-mount target); an existing one is fine.
    fn touch(&self, path: &Path) -> Result<()>;
}

/// The real system calls.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
            .map_err(|e| Error::sys("mount", target, e))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        nix::mount::umount2(target, flags).map_err(|e| Error::sys("umount", target, e))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
            .map_err(|e| Error::sys("pivot_root", new_root, e))
    }

    fn chroot(&self, path: &Path) -> Result<()> {
        nix::unistd::chroot(path).map_err(|e| Error::sys("chroot", path, e))
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        nix::unistd::chdir(path).map_err(|e| Error::sys("chdir", path, e))
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()> {
        nix::sys::stat::mknod(path, kind, perm, dev).map_err(|e| Error::sys("mknod", path, e))
    }

    fn chown(&self, path: &Path, uid: Option<Uid>, gid: Option<Gid>) -> Result<()> {
        nix::unistd::chown(path, uid, gid).map_err(|e| Error::sys("chown", path, e))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            r => r.map_err(|e| Error::io(link, e)),
        }
    }

    fn mkdir_all(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
    }

    fn touch(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            self.mkdir_all(parent)?;
        }
        // An existing mount point is left alone: opening it for writing would copy it up into
        // an overlay's upper directory (and so into a `berth build` RUN step's layer).
        if std::fs::symlink_metadata(path).is_ok() {
            return Ok(());
        }
        // 0755 as runc makes a missing file mount point (createIfNotExists): the empty file
        // stays in the root filesystem, and buildah commits it into the image.
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o755)
            .open(path)
            .map(drop)
            .map_err(|e| Error::io(path, e))
    }
}

/// A fake that records every call as one line and succeeds, for unit tests of ordering.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct RecordingSyscall {
    pub calls: std::cell::RefCell<Vec<String>>,
    /// `mknod` fails with EPERM, as inside a user namespace.
    pub mknod_denied: bool,
}

#[cfg(test)]
impl RecordingSyscall {
    fn record(&self, line: String) {
        self.calls.borrow_mut().push(line);
    }

    /// The recorded calls, each as `op args...`.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

#[cfg(test)]
impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        let flags = format!("{flags:?}");
        let flags = flags
            .strip_prefix("MsFlags(")
            .and_then(|f| f.strip_suffix(')'))
            .unwrap_or(&flags);
        self.record(format!(
            "mount {} {} {} {flags} {}",
            source.map_or("-".into(), |s| s.display().to_string()),
            target.display(),
            fstype.unwrap_or("-"),
            data.unwrap_or("-")
        ));
        Ok(())
    }
    fn umount2(&self, target: &Path, _flags: MntFlags) -> Result<()> {
        self.record(format!("umount {}", target.display()));
        Ok(())
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        self.record(format!(
            "pivot_root {} {}",
            new_root.display(),
            put_old.display()
        ));
        Ok(())
    }
    fn chroot(&self, path: &Path) -> Result<()> {
        self.record(format!("chroot {}", path.display()));
        Ok(())
    }
    fn chdir(&self, path: &Path) -> Result<()> {
        self.record(format!("chdir {}", path.display()));
        Ok(())
    }
    fn mknod(&self, path: &Path, _kind: SFlag, perm: Mode, dev: u64) -> Result<()> {
        if self.mknod_denied {
            return Err(Error::sys("mknod", path, nix::errno::Errno::EPERM));
        }
        self.record(format!(
            "mknod {} {:o} {}:{}",
            path.display(),
            perm.bits(),
            nix::sys::stat::major(dev),
            nix::sys::stat::minor(dev)
        ));
        Ok(())
    }
    fn chown(&self, path: &Path, uid: Option<Uid>, gid: Option<Gid>) -> Result<()> {
        self.record(format!("chown {} {uid:?} {gid:?}", path.display()));
        Ok(())
    }
    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        self.record(format!("symlink {} {}", target.display(), link.display()));
        Ok(())
    }
    fn mkdir_all(&self, path: &Path) -> Result<()> {
        self.record(format!("mkdir {}", path.display()));
        Ok(())
    }
    fn touch(&self, path: &Path) -> Result<()> {
        self.record(format!("touch {}", path.display()));
        Ok(())
    }
}
