//! Hard links whose target lies in a lower layer: the target is found in the layers below
//! (respecting their whiteouts) and linked into the linking layer's directory.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use super::error::{LayerCtx, UnpackError};
use super::extract::{DeferredLink, LayerFacts, OPAQUE_XATTR};
use super::resolve::{Root, split};

/// A layer directory as the lookup sees it.
#[derive(Debug, Clone, Copy)]
pub(super) enum LayerView<'a> {
    /// Whiteouts are overlayfs markers inside the directory.
    Overlay(&'a Path),
    /// Whiteouts were recorded during extraction.
    Recorded(&'a Path, &'a LayerFacts),
}

impl LayerView<'_> {
    fn dir(&self) -> &Path {
        match self {
            Self::Overlay(dir) | Self::Recorded(dir, _) => dir,
        }
    }
}

enum Lookup {
    Found(PathBuf),
    /// Not in this layer; `hides_lower` when this layer deletes or hides it below.
    Absent {
        hides_lower: bool,
    },
}

/// Makes every deferred link of layer `index` (of `layers`, bottom first).
pub(super) fn resolve_links(
    layers: &[LayerView<'_>],
    index: usize,
    links: &[DeferredLink],
    ctx: &LayerCtx,
) -> Result<(), UnpackError> {
    if links.is_empty() {
        return Ok(());
    }
    let dir = layers[index].dir();
    let mut root =
        Root::open(dir).map_err(|e| ctx.layer_io("open layer directory", dir, e.into()))?;
    for link in links {
        let found = find_below(layers, index, &link.target).ok_or_else(|| {
            ctx.unsafe_entry(
                &link.entry,
                format!(
                    "hard link target {} does not exist inside the root (in this layer or the layers below it)",
                    link.target.display()
                ),
            )
        })?;
        let (parent, leaf) = split(&link.link).expect("links name a non-root path");
        let parent_fd = root.dir(parent, &mut |_| {}).map_err(|e| {
            ctx.entry_io(
                &link.entry,
                "open parent directory inside the root",
                dir.join(parent),
                e.into(),
            )
        })?;
        let make = || {
            linkat(
                None,
                found.as_os_str(),
                Some(parent_fd),
                leaf,
                AtFlags::empty(),
            )
        };
        let made = match make() {
            Err(Errno::EEXIST) => {
                unlinkat(Some(parent_fd), leaf, UnlinkatFlags::NoRemoveDir).map_err(|e| {
                    ctx.entry_io(
                        &link.entry,
                        "remove the existing",
                        dir.join(&link.link),
                        e.into(),
                    )
                })?;
                make()
            }
            other => other,
        };
        made.map_err(|e| {
            ctx.entry_io(
                &link.entry,
                "create hard link",
                dir.join(&link.link),
                e.into(),
            )
        })?;
        tracing::debug!(entry = %link.entry, target = %found.display(), "linked to a lower layer's file");
    }
    Ok(())
}

fn find_below(layers: &[LayerView<'_>], index: usize, target: &Path) -> Option<PathBuf> {
    for layer in layers[..=index].iter().rev() {
        match lookup(layer, target) {
            Lookup::Found(path) => return Some(path),
            Lookup::Absent { hides_lower: true } => return None,
            Lookup::Absent { hides_lower: false } => {}
        }
    }
    None
}

/// Looks for `target` in one layer, walking real directories only (lstat each component), so
/// the path found never leaves the layer directory.
fn lookup(layer: &LayerView<'_>, target: &Path) -> Lookup {
    let mut path = layer.dir().to_path_buf();
    let mut opaque_seen = false;
    let components: Vec<_> = target.components().collect();
    // A recorded whiteout of the target or an ancestor, or an opaque ancestor, hides the
    // layers below this one.
    let masked = match layer {
        LayerView::Recorded(_, facts) => {
            target.ancestors().any(|a| facts.whiteouts.contains(a))
                || target
                    .ancestors()
                    .skip(1)
                    .any(|a| facts.opaques.contains(a))
        }
        LayerView::Overlay(_) => false,
    };
    for (i, component) in components.iter().enumerate() {
        path.push(component);
        let last = i + 1 == components.len();
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Lookup::Absent {
                    hides_lower: masked || opaque_seen,
                };
            }
            Err(_) => return Lookup::Absent { hides_lower: true },
        };
        let whiteout = matches!(layer, LayerView::Overlay(_))
            && meta.file_type().is_char_device()
            && meta.rdev() == 0;
        if whiteout {
            return Lookup::Absent { hides_lower: true };
        }
        if last {
            return if meta.is_dir() {
                Lookup::Absent { hides_lower: true }
            } else {
                Lookup::Found(path)
            };
        }
        if !meta.is_dir() {
            // A file or symlink where the target needs a directory hides the lower directory.
            return Lookup::Absent { hides_lower: true };
        }
        if let LayerView::Overlay(_) = layer {
            opaque_seen |= xattr::get(&path, OPAQUE_XATTR)
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y");
        }
    }
    Lookup::Absent { hides_lower: true }
}
