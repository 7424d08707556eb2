//! Seeding a new volume from the image, as Docker does: the image's directory at the mount
//! path is copied in with owners, modes, symlinks, device nodes, times and extended
//! attributes (hard links become separate files), once.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::Path;

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;

use super::Result;
use crate::fsutil::{IoError, io_err, remove_tree};

/// Copies `src` into the volume at `vol_dir` when `src` is a directory and the volume's
/// `_data` is still empty (content put there by hand wins, as with Docker). The copy is made
/// beside `_data` and renamed over it, so a crash leaves an empty volume, never half a copy.
pub(super) fn seed(src: &Path, vol_dir: &Path) -> Result<()> {
    let is_dir = fs::symlink_metadata(src).is_ok_and(|m| m.is_dir());
    let data = vol_dir.join("_data");
    let empty = fs::read_dir(&data)
        .map_err(io_err("list", &data))?
        .next()
        .is_none();
    if !is_dir || !empty {
        return Ok(());
    }
    let staging = vol_dir.join("_data.seed");
    remove_tree(&staging)?;
    copy_entry(src, &staging)?;
    // rename(2) replaces an empty directory.
    fs::rename(&staging, &data).map_err(io_err("move into place", &data))?;
    Ok(())
}

/// Copies one entry (a directory with everything under it) without following symlinks.
fn copy_entry(src: &Path, dst: &Path) -> Result<(), IoError> {
    let meta = fs::symlink_metadata(src).map_err(io_err("stat", src))?;
    let kind = meta.file_type();
    if kind.is_dir() {
        fs::create_dir(dst).map_err(io_err("create directory", dst))?;
        for entry in fs::read_dir(src).map_err(io_err("list", src))? {
            let entry = entry.map_err(io_err("list", src))?;
            copy_entry(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else if kind.is_file() {
        fs::copy(src, dst).map_err(io_err("copy", dst))?;
    } else if kind.is_symlink() {
        let target = fs::read_link(src).map_err(io_err("read link", src))?;
        symlink(&target, dst).map_err(io_err("create symlink", dst))?;
    } else {
        // Device nodes, fifos and sockets: the node itself, as tar would.
        let flag = SFlag::from_bits_truncate(meta.mode() & SFlag::S_IFMT.bits());
        mknod(
            dst,
            flag,
            Mode::from_bits_truncate(meta.mode()),
            meta.rdev(),
        )
        .map_err(|e| io_err("create node", dst)(e.into()))?;
    }
    lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(io_err("chown", dst))?;
    if !kind.is_symlink() {
        // After chown, which clears set-id bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("chmod", dst))?;
    }
    copy_xattrs(src, dst)?;
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(None, dst, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| io_err("set times of", dst)(e.into()))?;
    Ok(())
}

/// Extended attributes, where the filesystems on both sides have them (not symlinks').
fn copy_xattrs(src: &Path, dst: &Path) -> Result<(), IoError> {
    let names = match xattr::list(src) {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(()),
        Err(e) => return Err(io_err("list xattrs of", src)(e)),
    };
    for name in names {
        let Some(value) = xattr::get(src, &name).map_err(io_err("read xattr of", src))? else {
            continue;
        };
        match xattr::set(dst, &name, &value) {
            Ok(()) => {}
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(io_err("set xattr of", dst)(e)),
        }
    }
    Ok(())
}

/// No xattrs here, or not this namespace (user.* on a symlink, trusted.* on overlayfs).
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTSUP) | Some(libc::EPERM) | Some(libc::EINVAL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Needs root (chown to other owners): named in .config/nextest.toml's nonroot profile.
    #[test]
    fn seeding_copies_owners_modes_and_symlinks_once_into_an_empty_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), b"content").unwrap();
        // chown clears set-id bits: the mode after it.
        lchown(src.join("sub/f"), Some(1234), Some(5678)).unwrap();
        fs::set_permissions(src.join("sub/f"), fs::Permissions::from_mode(0o4750)).unwrap();
        symlink("/etc/passwd", src.join("link")).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o700)).unwrap();
        let vol = tmp.path().join("vol");
        fs::create_dir_all(vol.join("_data")).unwrap();
        seed(&src, &vol).unwrap();
        let data = vol.join("_data");
        let f = fs::metadata(data.join("sub/f")).unwrap();
        assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1234, 5678, 0o4750));
        assert_eq!(fs::read(data.join("sub/f")).unwrap(), b"content");
        assert_eq!(
            fs::read_link(data.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(fs::metadata(&data).unwrap().mode() & 0o7777, 0o700);
        // Not empty any more: a second seed leaves the content alone.
        fs::remove_file(data.join("sub/f")).unwrap();
        seed(&src, &vol).unwrap();
        assert!(!data.join("sub/f").exists());
    }
}
