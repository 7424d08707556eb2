//! Flattening: each lower layer's staging tree is merged under the tree already in the
//! destination by rename(2), top-down, skipping what upper layers delete or hide; directories
//! both sides have are walked into, everything else moves whole in one call.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::ops::Bound;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
use std::path::{Path, PathBuf};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use super::error::{UnpackError, image_io};
use super::extract::LayerFacts;

/// A layer already extracted: into a staging directory, or (the top one) into the destination.
#[derive(Debug, Clone, Copy)]
pub(super) struct StagedLayer<'a> {
    pub dir: &'a Path,
    pub facts: &'a LayerFacts,
}

struct Merger<'a> {
    image: &'a str,
    dest: &'a Path,
    /// Deleted by a layer above the one being merged.
    whiteouts: BTreeSet<PathBuf>,
    /// Hidden below by a layer above the one being merged.
    opaques: BTreeSet<PathBuf>,
    /// Directories in the destination that no header has described yet.
    implicit: BTreeSet<PathBuf>,
    /// Directories in the destination whose entries changed: their mtimes are restored.
    touched: BTreeSet<PathBuf>,
}

/// Merges `layers` (bottom first; the last one is already in `dest`) into `dest`.
pub(super) fn merge_down(
    dest: &Path,
    layers: &[StagedLayer<'_>],
    image: &str,
) -> Result<(), UnpackError> {
    let Some((top, lower)) = layers.split_last() else {
        return Ok(());
    };
    let mut merger = Merger {
        image,
        dest,
        whiteouts: top.facts.whiteouts.clone(),
        opaques: top.facts.opaques.clone(),
        implicit: top.facts.implicit_dirs.clone(),
        touched: BTreeSet::new(),
    };
    for layer in lower.iter().rev() {
        let root = Path::new("");
        if merger.implicit.contains(root) && !layer.facts.implicit_dirs.contains(root) {
            merger.adopt_metadata(layer.dir, root)?;
        }
        merger.merge_dir(layer, root)?;
        merger
            .whiteouts
            .extend(layer.facts.whiteouts.iter().cloned());
        merger.opaques.extend(layer.facts.opaques.iter().cloned());
    }
    merger.restore_mtimes(layers)
}

impl Merger<'_> {
    fn io(&self, op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UnpackError {
        image_io(self.image, op, path)
    }

    fn merge_dir(&mut self, layer: &StagedLayer<'_>, rel: &Path) -> Result<(), UnpackError> {
        let src_dir = layer.dir.join(rel);
        let entries = fs::read_dir(&src_dir).map_err(self.io("list", &src_dir))?;
        for entry in entries {
            let entry = entry.map_err(self.io("list", &src_dir))?;
            let child = rel.join(entry.file_name());
            if self.whiteouts.contains(&child) {
                continue;
            }
            let src_is_dir = entry
                .file_type()
                .map_err(self.io("stat", &entry.path()))?
                .is_dir();
            let dst = self.dest.join(&child);
            match fs::symlink_metadata(&dst) {
                Ok(meta) if meta.is_dir() && src_is_dir => {
                    if self.implicit.contains(&child) && !layer.facts.implicit_dirs.contains(&child)
                    {
                        self.adopt_metadata(layer.dir, &child)?;
                    }
                    if !self.opaques.contains(&child) {
                        self.merge_dir(layer, &child)?;
                    }
                }
                // The upper entry wins over whatever the lower layer has there.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::rename(entry.path(), &dst).map_err(self.io("move into place", &dst))?;
                    self.touched.insert(rel.to_path_buf());
                    if src_is_dir {
                        self.moved_dir(layer, &child)?;
                    }
                }
                Err(e) => return Err(self.io("stat", &dst)(e)),
            }
        }
        Ok(())
    }

    /// A lower directory moved in whole: note its implicit directories, and apply upper
    /// whiteouts that lie inside it (their layer had no directory there to merge into).
    fn moved_dir(&mut self, layer: &StagedLayer<'_>, rel: &Path) -> Result<(), UnpackError> {
        self.implicit
            .extend(under(&layer.facts.implicit_dirs, rel).cloned());
        let whiteouts: Vec<PathBuf> = under(&self.whiteouts, rel).cloned().collect();
        for path in whiteouts {
            if remove_confined(self.dest, &path)
                .map_err(self.io("remove whited-out", &self.dest.join(&path)))?
            {
                self.touched
                    .insert(path.parent().unwrap_or(Path::new("")).to_path_buf());
            }
        }
        let opaques: Vec<PathBuf> = under(&self.opaques, rel).cloned().collect();
        for path in opaques {
            if clear_confined(self.dest, &path)
                .map_err(self.io("clear opaque", &self.dest.join(&path)))?
            {
                self.touched.insert(path);
            }
        }
        Ok(())
    }

    /// Gives a directory that no upper header described the owner and mode of the lower one.
    fn adopt_metadata(&mut self, lower_dir: &Path, rel: &Path) -> Result<(), UnpackError> {
        let src = lower_dir.join(rel);
        let dst = self.dest.join(rel);
        let meta = fs::symlink_metadata(&src).map_err(self.io("stat", &src))?;
        lchown(&dst, Some(meta.uid()), Some(meta.gid())).map_err(self.io("chown", &dst))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(self.io("chmod", &dst))?;
        self.implicit.remove(rel);
        self.touched.insert(rel.to_path_buf());
        Ok(())
    }

    /// Moving entries in changed directory mtimes: set them back to the topmost header's.
    fn restore_mtimes(&self, layers: &[StagedLayer<'_>]) -> Result<(), UnpackError> {
        let mut times: HashMap<&Path, TimeSpec> = HashMap::new();
        for layer in layers {
            for (rel, mtime) in &layer.facts.dir_times {
                times.insert(rel.as_path(), *mtime);
            }
        }
        for rel in &self.touched {
            let Some(mtime) = times.get(rel.as_path()) else {
                continue;
            };
            let path = self.dest.join(rel);
            match utimensat(None, &path, mtime, mtime, UtimensatFlags::NoFollowSymlink) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(self.io("set mtime of", &path)(e.into())),
            }
        }
        Ok(())
    }
}

/// The members of `set` strictly below `rel` (paths order component-wise, so they are
/// contiguous after `rel`).
fn under<'s>(set: &'s BTreeSet<PathBuf>, rel: &'s Path) -> impl Iterator<Item = &'s PathBuf> + 's {
    set.range::<Path, _>((Bound::Excluded(rel), Bound::Unbounded))
        .take_while(move |p| p.starts_with(rel))
}

/// `dest/rel` when every component above it is a real directory (never through a symlink).
fn confined(dest: &Path, rel: &Path) -> io::Result<Option<PathBuf>> {
    let mut path = dest.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for component in parent.components() {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(rel.file_name().map(|name| path.join(name)))
}

/// Removes `dest/rel` if it exists inside the root; true if something was removed.
fn remove_confined(dest: &Path, rel: &Path) -> io::Result<bool> {
    let Some(path) = confined(dest, rel)? else {
        return Ok(false);
    };
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path).map(|()| true),
        Ok(_) => fs::remove_file(&path).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Empties the directory `dest/rel` if it is one inside the root; true if it was.
fn clear_confined(dest: &Path, rel: &Path) -> io::Result<bool> {
    let Some(path) = confined(dest, rel)? else {
        return Ok(false);
    };
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => {}
        _ => return Ok(false),
    }
    for entry in fs::read_dir(&path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(true)
}
