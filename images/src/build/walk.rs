//! Listing a directory tree as layer entries in a deterministic order (parents first, siblings
//! by name bytes), with what a tar header needs from each file.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::error::{BuildError, Result, io_err};

/// What a layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Dir,
    File {
        len: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A later name of a file already in the layer (same device and inode).
    HardLink {
        target: String,
    },
    CharDevice {
        major: u64,
        minor: u64,
    },
    BlockDevice {
        major: u64,
        minor: u64,
    },
    Fifo,
    /// An empty `.wh.` marker that deletes a lower layer's file (or, `.wh..wh..opq`, makes a
    /// directory opaque).
    Whiteout,
}

/// One entry of the layer tar.
#[derive(Debug, Clone)]
pub(crate) struct LayerEntry {
    /// Relative path, `/`-separated, no leading `./`; directories end in `/` (as umoci and
    /// Go's archive/tar write them).
    pub path: String,
    /// The file on disk the content comes from (regular files).
    pub source: Option<PathBuf>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// (device, inode) of a regular file with more than one link.
    link_key: Option<(u64, u64)>,
}

impl LayerEntry {
    /// A directory entry at `path` (ending in `/`), for parents a layer must create.
    pub(crate) fn dir(path: String, mode: u32, mtime: u64) -> Self {
        Self {
            kind: EntryKind::Dir,
            mode,
            mtime,
            ..Self::whiteout(path)
        }
    }

    /// A whiteout marker entry at `path`.
    pub(crate) fn whiteout(path: String) -> Self {
        Self {
            path,
            source: None,
            kind: EntryKind::Whiteout,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
            link_key: None,
        }
    }
}

/// Component-wise comparison: puts a directory right before its contents, siblings by bytes.
fn tar_order(a: &str, b: &str) -> Ordering {
    let parts = |p: &str| {
        p.trim_end_matches('/')
            .split('/')
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    parts(a).cmp(&parts(b))
}

/// Lists everything under `root` (not `root` itself) plus `extra` entries, in tar order, with
/// hard links resolved to the first path of each inode.
pub(crate) fn list_tree(root: &Path, extra: Vec<LayerEntry>) -> Result<Vec<LayerEntry>> {
    let mut entries = Vec::new();
    walk(root, root, &|_| true, &mut entries)?;
    for entry in &extra {
        if let Some(clash) = entries
            .iter()
            .find(|e| e.path.trim_end_matches('/') == entry.path)
        {
            return Err(BuildError::InvalidOption {
                option: format!("--whiteout for {}", clash.path),
                reason: "the whiteout marker's own path exists in the source directory".into(),
            });
        }
    }
    entries.extend(extra);
    Ok(in_tar_order(entries))
}

/// Lists what is under `root` (not `root` itself) whose relative path `keep` accepts, in walk
/// order; a directory that is not kept is not entered. Finish with [`in_tar_order`].
pub(crate) fn list_kept(root: &Path, keep: &dyn Fn(&str) -> bool) -> Result<Vec<LayerEntry>> {
    let mut entries = Vec::new();
    walk(root, root, keep, &mut entries)?;
    Ok(entries)
}

/// Sorts entries into tar order and turns later names of one inode into hard links.
pub(crate) fn in_tar_order(mut entries: Vec<LayerEntry>) -> Vec<LayerEntry> {
    entries.sort_by(|a, b| tar_order(&a.path, &b.path));
    let mut first_path: HashMap<(u64, u64), String> = HashMap::new();
    for entry in &mut entries {
        let Some(key) = entry.link_key else { continue };
        match first_path.get(&key) {
            Some(target) => {
                entry.kind = EntryKind::HardLink {
                    target: target.clone(),
                };
                entry.source = None;
            }
            None => {
                first_path.insert(key, entry.path.clone());
            }
        }
    }
    entries
}

fn walk(
    root: &Path,
    dir: &Path,
    keep: &dyn Fn(&str) -> bool,
    out: &mut Vec<LayerEntry>,
) -> Result<()> {
    let mut children: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(io_err("list", dir))?
        .collect::<std::io::Result<_>>()
        .map_err(io_err("list", dir))?;
    children.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for child in children {
        let path = child.path();
        let relative = path
            .strip_prefix(root)
            .expect("walked paths are under the root")
            .to_str()
            .ok_or_else(|| BuildError::InvalidOption {
                option: path.display().to_string(),
                reason: "the path is not valid UTF-8, which berth's layer builder does not handle"
                    .into(),
            })?
            .to_string();
        if !keep(&relative) {
            continue;
        }
        let Some(entry) = entry_for(&path, relative)? else {
            continue;
        };
        let is_dir = entry.kind == EntryKind::Dir;
        out.push(entry);
        if is_dir {
            walk(root, &path, keep, out)?;
        }
    }
    Ok(())
}

/// The layer entry for the file at `path` (not following a symlink), named `relative` in the
/// layer (a directory gets its trailing `/`); `None` for a socket, which tar cannot hold.
pub(crate) fn entry_for(path: &Path, relative: String) -> Result<Option<LayerEntry>> {
    let meta = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
    let file_type = meta.file_type();
    let (kind, link_key) = if file_type.is_dir() {
        (EntryKind::Dir, None)
    } else if file_type.is_file() {
        let key = (meta.nlink() > 1).then_some((meta.dev(), meta.ino()));
        (EntryKind::File { len: meta.len() }, key)
    } else if file_type.is_symlink() {
        let target = fs::read_link(path).map_err(io_err("read symlink", path))?;
        (
            EntryKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            },
            None,
        )
    } else if file_type.is_char_device() {
        let (major, minor) = device_numbers(meta.rdev());
        (EntryKind::CharDevice { major, minor }, None)
    } else if file_type.is_block_device() {
        let (major, minor) = device_numbers(meta.rdev());
        (EntryKind::BlockDevice { major, minor }, None)
    } else if file_type.is_fifo() {
        (EntryKind::Fifo, None)
    } else {
        // Sockets cannot be stored in a tar; they are runtime objects anyway.
        tracing::warn!(path = %path.display(), "skipping a socket: tar cannot hold one");
        return Ok(None);
    };
    let is_dir = kind == EntryKind::Dir;
    Ok(Some(LayerEntry {
        path: if is_dir {
            format!("{}/", relative.trim_end_matches('/'))
        } else {
            relative
        },
        source: matches!(kind, EntryKind::File { .. }).then(|| path.to_path_buf()),
        kind,
        // Permission bits plus setuid/setgid/sticky; the file type goes in the type flag.
        mode: meta.mode() & 0o7777,
        uid: u64::from(meta.uid()),
        gid: u64::from(meta.gid()),
        mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        xattrs: read_xattrs(path)?,
        link_key,
    }))
}

fn device_numbers(rdev: u64) -> (u64, u64) {
    (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
}

/// The file's own extended attributes (not a symlink target's), sorted by name.
fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        // Filesystems without xattr support have none to copy.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list xattrs of", path)(e).into()),
    };
    let mut xattrs = Vec::new();
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(value) = xattr::get(path, &name).map_err(io_err("read xattr of", path))? {
            xattrs.push((name, value));
        }
    }
    xattrs.sort();
    Ok(xattrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_come_right_before_their_contents() {
        let mut paths = vec!["a-b", "a/", "a/z", "a/b/", "a/b/c", "0"];
        paths.sort_by(|a, b| tar_order(a, b));
        assert_eq!(paths, ["0", "a/", "a/b/", "a/b/c", "a/z", "a-b"]);
    }
}
