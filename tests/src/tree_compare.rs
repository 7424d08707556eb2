//! Compares two root filesystem trees entry by entry: paths, types, modes, owners, link
//! targets, device numbers, file contents and mtimes. Returns the differences, so a failing
//! test lists all of them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What is compared about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub link: Option<PathBuf>,
    pub rdev: u64,
    pub size: u64,
    pub mtime: i64,
}

fn kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_file() {
        "file"
    } else if t.is_char_device() {
        "char"
    } else if t.is_block_device() {
        "block"
    } else if t.is_fifo() {
        "fifo"
    } else {
        "socket"
    }
}

/// Every path under `root` (relative) with what is compared about it; the root itself is "".
pub fn scan(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let node = Node {
            kind: kind(&meta),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            link: meta
                .file_type()
                .is_symlink()
                .then(|| fs::read_link(&path).unwrap()),
            rdev: meta.rdev(),
            size: if meta.is_file() { meta.len() } else { 0 },
            mtime: meta.mtime(),
        };
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(rel.join(entry.unwrap().file_name()));
            }
        }
        out.insert(rel, node);
    }
    out
}

/// The differences between two trees (empty when they are the same). Directory mtimes are
/// compared too unless `ignore_dir_mtimes`; the roots' own metadata is not compared.
pub fn compare_trees(expected: &Path, actual: &Path, ignore_dir_mtimes: bool) -> Vec<String> {
    let want = scan(expected);
    let got = scan(actual);
    let mut diffs = Vec::new();
    for (rel, w) in &want {
        if rel.as_os_str().is_empty() {
            continue;
        }
        let Some(g) = got.get(rel) else {
            diffs.push(format!("missing: {}", rel.display()));
            continue;
        };
        let (mut w_cmp, mut g_cmp) = (w.clone(), g.clone());
        if ignore_dir_mtimes && w.kind == "dir" {
            w_cmp.mtime = 0;
            g_cmp.mtime = 0;
        }
        if w_cmp != g_cmp {
            diffs.push(format!(
                "differs: {}: expected {w:?}, got {g:?}",
                rel.display()
            ));
        } else if w.kind == "file"
            && fs::read(expected.join(rel)).unwrap() != fs::read(actual.join(rel)).unwrap()
        {
            diffs.push(format!("content differs: {}", rel.display()));
        }
    }
    for rel in got.keys() {
        if !want.contains_key(rel) {
            diffs.push(format!("unexpected: {}", rel.display()));
        }
    }
    diffs
}
