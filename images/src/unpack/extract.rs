//! Applies tar entries inside a confined root: files, directories, links, devices, owners,
//! modes, xattrs, mtimes, and whiteouts (as overlayfs markers or recorded for a flat merge).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, makedev,
    mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

use super::error::{LayerCtx, UnpackError};
use super::resolve::{Root, clean, proc_path, split};

/// The overlayfs xattr marking a directory whose lower contents are hidden.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_NAME: &[u8] = b".wh..opq";
const COPY_BUFFER: usize = 256 << 10;

/// How whiteout entries are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WhiteoutMode {
    /// As overlayfs markers in the layer directory: `.wh.NAME` becomes a 0/0 character device
    /// NAME, `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its directory.
    Overlay,
    /// Only recorded in `LayerFacts`, for the flat merge to apply to the layers below.
    Record,
}

/// A hard link whose target was not in the layer when the link came: resolved against the
/// layers below once all are extracted.
#[derive(Debug, Clone)]
pub(super) struct DeferredLink {
    pub entry: String,
    pub link: PathBuf,
    pub target: PathBuf,
}

/// What extracting one layer learned, besides the files it wrote.
#[derive(Debug, Default)]
pub(super) struct LayerFacts {
    pub entries: u64,
    /// Paths this layer deletes from the layers below (Record mode).
    pub whiteouts: BTreeSet<PathBuf>,
    /// Directories whose lower contents this layer hides (Record mode).
    pub opaques: BTreeSet<PathBuf>,
    /// Directories created only because an entry below them needed them (no header of their
    /// own): a lower layer's header for them supplies their metadata. "" is the root.
    pub implicit_dirs: BTreeSet<PathBuf>,
    /// Directory mtimes from headers, applied once the layer is complete.
    pub dir_times: Vec<(PathBuf, TimeSpec)>,
    pub deferred_links: Vec<DeferredLink>,
}

/// Owner, mode, times and xattrs from a tar header and its PAX records.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Extracts the entries of one layer into one directory.
#[derive(Debug)]
pub(super) struct Extractor<'a> {
    root: Root,
    ctx: &'a LayerCtx,
    mode: WhiteoutMode,
    facts: LayerFacts,
    buf: Vec<u8>,
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

impl<'a> Extractor<'a> {
    pub(super) fn new(root: Root, ctx: &'a LayerCtx, mode: WhiteoutMode) -> Self {
        let mut facts = LayerFacts::default();
        facts.implicit_dirs.insert(PathBuf::new());
        Self {
            root,
            ctx,
            mode,
            facts,
            buf: vec![0; COPY_BUFFER],
        }
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Applies one entry.
    pub(super) fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        self.facts.entries += 1;
        let meta = read_meta(entry)
            .map_err(|e| self.ctx.unsafe_entry(&name, format!("bad header: {e}")))?;
        let rel = clean(&raw);
        let Some((parent, leaf)) = split(&rel) else {
            return self.root_entry(kind, &meta, &name);
        };
        if let Some(hidden) = leaf.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(parent, hidden, &name);
        }
        match kind {
            EntryType::Directory => self.directory(&rel, &meta, &name),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, &rel, &meta, &name)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| self.ctx.unsafe_entry(&name, "symlink without a target"))?;
                self.symlink(&rel, &target, &meta, &name)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| self.ctx.unsafe_entry(&name, "hard link without a target"))?;
                self.hard_link(&rel, &target, &name)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.node(&rel, kind, major, minor, &meta, &name)
            }
            other => {
                tracing::warn!(entry = %name, kind = ?other, layer = %self.ctx.layer, "skipping tar entry of unsupported type");
                Ok(())
            }
        }
    }

    /// Opens (creating as needed) the directory an entry goes in.
    fn parent_fd(&mut self, parent: &Path, name: &str) -> Result<RawFd, UnpackError> {
        let implicit = &mut self.facts.implicit_dirs;
        let result = self.root.dir(parent, &mut |made| {
            implicit.insert(made.to_path_buf());
        });
        result.map_err(|e| {
            self.ctx.entry_io(
                name,
                "open parent directory inside the root",
                self.root.path().join(parent),
                errno_io(e),
            )
        })
    }

    /// Removes whatever is at `leaf` in `dir` so an entry can take its place.
    fn remove_existing(
        &mut self,
        dir: RawFd,
        leaf: &OsStr,
        rel: &Path,
        name: &str,
    ) -> Result<(), UnpackError> {
        // Anything cached may sit below what is removed.
        self.root.forget();
        let stat = match fstatat(Some(dir), leaf, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(self.ctx.entry_io(name, "stat", self.full(rel), errno_io(e))),
        };
        let result =
            if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR {
                std::fs::remove_dir_all(proc_path(dir, leaf))
            } else {
                unlinkat(Some(dir), leaf, UnlinkatFlags::NoRemoveDir).map_err(errno_io)
            };
        result.map_err(|e| {
            self.ctx
                .entry_io(name, "remove the existing", self.full(rel), e)
        })
    }

    fn root_entry(&mut self, kind: EntryType, meta: &Meta, name: &str) -> Result<(), UnpackError> {
        if kind != EntryType::Directory {
            tracing::warn!(entry = %name, "skipping a non-directory entry naming the root");
            return Ok(());
        }
        let fd = self.root.raw_fd();
        self.set_fd_meta(fd, meta, Path::new(""), name)?;
        self.facts.implicit_dirs.remove(Path::new(""));
        self.facts.dir_times.push((PathBuf::new(), meta.mtime));
        Ok(())
    }

    fn whiteout(&mut self, parent: &Path, hidden: &[u8], name: &str) -> Result<(), UnpackError> {
        if hidden == OPAQUE_NAME {
            let dir = self.parent_fd(parent, name)?;
            if self.mode == WhiteoutMode::Overlay {
                fset_xattr(dir, OPAQUE_XATTR, b"y").map_err(|e| {
                    self.ctx.entry_io(
                        name,
                        "mark opaque (trusted.overlay.opaque)",
                        self.full(parent),
                        e,
                    )
                })?;
            } else {
                self.facts.opaques.insert(parent.to_path_buf());
            }
            return Ok(());
        }
        if hidden.starts_with(WHITEOUT_PREFIX)
            || hidden.is_empty()
            || hidden == b"."
            || hidden == b".."
        {
            // aufs bookkeeping (.wh..wh.plnk and the like) or a malformed name: nothing to delete.
            tracing::debug!(entry = %name, "skipping whiteout metadata entry");
            return Ok(());
        }
        let hidden = OsStr::from_bytes(hidden);
        let target = parent.join(hidden);
        match self.mode {
            WhiteoutMode::Record => {
                self.facts.whiteouts.insert(target);
            }
            WhiteoutMode::Overlay => {
                let dir = self.parent_fd(parent, name)?;
                self.remove_existing(dir, hidden, &target, name)?;
                mknodat(
                    Some(dir),
                    hidden,
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    makedev(0, 0),
                )
                .map_err(|e| {
                    self.ctx.entry_io(
                        name,
                        "create whiteout device",
                        self.full(&target),
                        errno_io(e),
                    )
                })?;
            }
        }
        Ok(())
    }

    fn directory(&mut self, rel: &Path, meta: &Meta, name: &str) -> Result<(), UnpackError> {
        let (parent, leaf) = split(rel).expect("caller checked the path is not the root");
        let dir = self.parent_fd(parent, name)?;
        match mkdirat(Some(dir), leaf, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EEXIST) if is_dir_at(dir, leaf) => {}
            Err(Errno::EEXIST) => {
                self.remove_existing(dir, leaf, rel, name)?;
                mkdirat(Some(dir), leaf, Mode::from_bits_truncate(0o700)).map_err(|e| {
                    self.ctx
                        .entry_io(name, "create directory", self.full(rel), errno_io(e))
                })?;
            }
            Err(e) => {
                return Err(self.ctx.entry_io(
                    name,
                    "create directory",
                    self.full(rel),
                    errno_io(e),
                ));
            }
        }
        let fd = openat(
            Some(dir),
            leaf,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            self.ctx
                .entry_io(name, "open directory", self.full(rel), errno_io(e))
        })?;
        // SAFETY: `openat` just returned this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        self.set_fd_meta(fd.as_raw_fd(), meta, rel, name)?;
        self.facts.implicit_dirs.remove(rel);
        self.facts.dir_times.push((rel.to_path_buf(), meta.mtime));
        self.root.remember(rel.to_path_buf(), fd);
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        meta: &Meta,
        name: &str,
    ) -> Result<(), UnpackError> {
        let (parent, leaf) = split(rel).expect("caller checked the path is not the root");
        let dir = self.parent_fd(parent, name)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let create = || openat(Some(dir), leaf, flags, Mode::from_bits_truncate(0o600));
        let fd = match create() {
            Err(Errno::EEXIST) => {
                self.remove_existing(dir, leaf, rel, name)?;
                create()
            }
            other => other,
        }
        .map_err(|e| {
            self.ctx
                .entry_io(name, "create file", self.full(rel), errno_io(e))
        })?;
        // SAFETY: `openat` just returned this fd and nothing else owns it.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.ctx.invalid_tar(e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| self.ctx.entry_io(name, "write", self.full(rel), e))?;
        }
        self.set_fd_meta(file.as_raw_fd(), meta, rel, name)?;
        futimens(file.as_raw_fd(), &meta.mtime, &meta.mtime).map_err(|e| {
            self.ctx
                .entry_io(name, "set mtime of", self.full(rel), errno_io(e))
        })
    }

    fn symlink(
        &mut self,
        rel: &Path,
        target: &[u8],
        meta: &Meta,
        name: &str,
    ) -> Result<(), UnpackError> {
        let (parent, leaf) = split(rel).expect("caller checked the path is not the root");
        let dir = self.parent_fd(parent, name)?;
        let target = OsStr::from_bytes(target);
        let made = match symlinkat(target, Some(dir), leaf) {
            Err(Errno::EEXIST) => {
                self.remove_existing(dir, leaf, rel, name)?;
                symlinkat(target, Some(dir), leaf)
            }
            other => other,
        };
        made.map_err(|e| {
            self.ctx
                .entry_io(name, "create symlink", self.full(rel), errno_io(e))
        })?;
        self.set_at_meta(dir, leaf, meta, rel, name, false)
    }

    fn hard_link(&mut self, rel: &Path, target: &[u8], name: &str) -> Result<(), UnpackError> {
        let (parent, leaf) = split(rel).expect("caller checked the path is not the root");
        let target_rel = clean(target);
        let Some((target_parent, target_leaf)) = split(&target_rel) else {
            return Err(self
                .ctx
                .unsafe_entry(name, "hard link to the root directory"));
        };
        if target_rel == rel {
            return Ok(());
        }
        let dir = self.parent_fd(parent, name)?;
        let target_dir = match self.root.open_dir(target_parent) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return self.defer_link(rel, target_rel, name),
            Err(e) => {
                return Err(self.ctx.entry_io(
                    name,
                    "open hard link target directory",
                    self.full(target_parent),
                    errno_io(e),
                ));
            }
        };
        let link = || {
            linkat(
                Some(target_dir.as_raw_fd()),
                target_leaf,
                Some(dir),
                leaf,
                AtFlags::empty(),
            )
        };
        let linked = match link() {
            Err(Errno::EEXIST) => {
                self.remove_existing(dir, leaf, rel, name)?;
                link()
            }
            other => other,
        };
        match linked {
            Ok(()) => Ok(()),
            Err(Errno::ENOENT) => self.defer_link(rel, target_rel, name),
            Err(e) => Err(self
                .ctx
                .entry_io(name, "create hard link", self.full(rel), errno_io(e))),
        }
    }

    fn defer_link(&mut self, rel: &Path, target: PathBuf, name: &str) -> Result<(), UnpackError> {
        tracing::debug!(entry = %name, target = %target.display(), "hard link target not in this layer yet");
        self.facts.deferred_links.push(DeferredLink {
            entry: name.to_string(),
            link: rel.to_path_buf(),
            target,
        });
        Ok(())
    }

    fn node(
        &mut self,
        rel: &Path,
        kind: EntryType,
        major: u32,
        minor: u32,
        meta: &Meta,
        name: &str,
    ) -> Result<(), UnpackError> {
        let (parent, leaf) = split(rel).expect("caller checked the path is not the root");
        let dir = self.parent_fd(parent, name)?;
        let sflag = match kind {
            EntryType::Char => SFlag::S_IFCHR,
            EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let dev = makedev(u64::from(major), u64::from(minor));
        let make = || mknodat(Some(dir), leaf, sflag, Mode::from_bits_truncate(0o600), dev);
        let made = match make() {
            Err(Errno::EEXIST) => {
                self.remove_existing(dir, leaf, rel, name)?;
                make()
            }
            other => other,
        };
        made.map_err(|e| {
            self.ctx
                .entry_io(name, "create device node", self.full(rel), errno_io(e))
        })?;
        self.set_at_meta(dir, leaf, meta, rel, name, true)
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs, on an open file or directory.
    fn set_fd_meta(
        &self,
        fd: RawFd,
        meta: &Meta,
        rel: &Path,
        name: &str,
    ) -> Result<(), UnpackError> {
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| {
            self.ctx
                .entry_io(name, "chown", self.full(rel), errno_io(e))
        })?;
        fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7777)).map_err(|e| {
            self.ctx
                .entry_io(name, "chmod", self.full(rel), errno_io(e))
        })?;
        for (key, value) in &meta.xattrs {
            if let Err(e) = fset_xattr(fd, key, value) {
                tracing::warn!(entry = %name, xattr = %key, error = %e, "the filesystem refused an xattr; skipped");
            }
        }
        Ok(())
    }

    /// The same for a symlink or device node, named in an open directory and never followed.
    fn set_at_meta(
        &self,
        dir: RawFd,
        leaf: &OsStr,
        meta: &Meta,
        rel: &Path,
        name: &str,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        fchownat(
            Some(dir),
            leaf,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| {
            self.ctx
                .entry_io(name, "chown", self.full(rel), errno_io(e))
        })?;
        if chmod {
            // Only for device nodes and fifos this extraction just made, never for symlinks,
            // so following the name cannot leave the root.
            fchmodat(
                Some(dir),
                leaf,
                Mode::from_bits_truncate(meta.mode & 0o7777),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| {
                self.ctx
                    .entry_io(name, "chmod", self.full(rel), errno_io(e))
            })?;
        }
        if !meta.xattrs.is_empty() {
            let path = proc_path(dir, leaf);
            for (key, value) in &meta.xattrs {
                // xattr::set uses lsetxattr: the leaf is not followed.
                if let Err(e) = xattr::set(&path, key, value) {
                    tracing::warn!(entry = %name, xattr = %key, error = %e, "the filesystem refused an xattr; skipped");
                }
            }
        }
        utimensat(
            Some(dir),
            leaf,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| {
            self.ctx
                .entry_io(name, "set mtime of", self.full(rel), errno_io(e))
        })
    }

    /// Sets directory mtimes (creating entries inside a directory changed them) and returns
    /// what the layer learned.
    pub(super) fn finish(mut self) -> Result<LayerFacts, UnpackError> {
        self.root.forget();
        for (rel, mtime) in std::mem::take(&mut self.facts.dir_times).iter().rev() {
            let fd = match self.root.open_dir_nofollow(rel) {
                Ok(fd) => fd,
                // Removed or replaced by a later entry of the same layer.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(e) => {
                    return Err(self
                        .ctx
                        .layer_io("open directory", self.full(rel), errno_io(e)));
                }
            };
            futimens(fd.as_raw_fd(), mtime, mtime).map_err(|e| {
                self.ctx
                    .layer_io("set mtime of", self.full(rel), errno_io(e))
            })?;
            self.facts.dir_times.push((rel.clone(), *mtime));
        }
        Ok(self.facts)
    }
}

fn is_dir_at(dir: RawFd, leaf: &OsStr) -> bool {
    fstatat(Some(dir), leaf, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
    })
}

/// fsetxattr(2) on an open file or directory.
pub(super) fn fset_xattr(fd: RawFd, name: &str, value: &[u8]) -> io::Result<()> {
    let name =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a NUL-terminated string and `value` a live slice of the length passed;
    // the kernel only reads them during the call. An invalid fd yields EBADF, not UB.
    let rc = unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let header = entry.header();
    let mut meta = Meta {
        uid: header_field("uid", header.uid()?)?,
        gid: header_field("gid", header.gid()?)?,
        mode: header.mode()?,
        mtime: TimeSpec::new(header_field("mtime", header.mtime()?)?, 0),
        xattrs: Vec::new(),
    };
    if let Some(extensions) = entry.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            let Ok(key) = extension.key() else { continue };
            if let Some(xattr) = key.strip_prefix("SCHILY.xattr.") {
                meta.xattrs
                    .push((xattr.to_string(), extension.value_bytes().to_vec()));
                continue;
            }
            let Ok(value) = extension.value() else {
                continue;
            };
            match key {
                "uid" => meta.uid = value.parse().map_err(|_| bad_pax(key, value))?,
                "gid" => meta.gid = value.parse().map_err(|_| bad_pax(key, value))?,
                "mtime" => meta.mtime = parse_pax_time(value).ok_or_else(|| bad_pax(key, value))?,
                _ => {}
            }
        }
    }
    Ok(meta)
}

/// A numeric tar header field in the type berth keeps it as; out of range is refused as PAX
/// records out of range are.
fn header_field<T: TryFrom<u64>>(key: &str, value: u64) -> io::Result<T> {
    T::try_from(value).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("tar header {key} {value} is out of range"),
        )
    })
}

fn bad_pax(key: &str, value: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad PAX record {key}={value:?}"),
    )
}

/// PAX times are decimal seconds with an optional fraction: "1700000000.5".
fn parse_pax_time(value: &str) -> Option<TimeSpec> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        let parsed: i64 = digits.parse().ok()?;
        parsed * 10i64.pow(9 - u32::try_from(digits.len()).ok()?)
    };
    Some(TimeSpec::new(secs, if secs < 0 { -nanos } else { nanos }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_keep_their_fraction() {
        let t = parse_pax_time("1700000000.25").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1_700_000_000, 250_000_000));
        let t = parse_pax_time("12").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (12, 0));
        assert!(parse_pax_time("x.1").is_none());
    }
}
