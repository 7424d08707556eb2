//! An overlay upper directory as OCI layer entries: whiteouts (character devices 0/0) become
//! `.wh.NAME` markers, opaque directories (`trusted.overlay.opaque=y`) get a `.wh..wh..opq`
//! marker, overlay's own xattrs are dropped, and with SOURCE_DATE_EPOCH every mtime is that.

use std::path::Path;

use crate::build::BuildError;
use crate::build::walk::{EntryKind, LayerEntry, in_tar_order, list_kept};

/// The prefix of the xattrs overlayfs keeps for itself (opaque, origin, impure, ...).
const OVERLAY_XATTRS: &str = "trusted.overlay.";
const OPAQUE: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// The layer entries of `upper`, in tar order.
pub(crate) fn upper_entries(
    upper: &Path,
    epoch: Option<u64>,
) -> Result<Vec<LayerEntry>, BuildError> {
    let mut out = Vec::new();
    for mut entry in list_kept(upper, &|_| true)? {
        if let Some(epoch) = epoch {
            entry.mtime = epoch;
        }
        let opaque = entry
            .xattrs
            .iter()
            .any(|(name, value)| name == OPAQUE && value.as_slice() == b"y");
        entry
            .xattrs
            .retain(|(name, _)| !name.starts_with(OVERLAY_XATTRS));
        match entry.kind {
            EntryKind::CharDevice { major: 0, minor: 0 } => {
                let (dir, name) = split(&entry.path);
                out.push(marker(format!("{dir}{WHITEOUT_PREFIX}{name}"), &entry));
            }
            EntryKind::Dir if opaque => {
                let path = format!("{}{OPAQUE_MARKER}", entry.path);
                let marker = marker(path, &entry);
                out.push(entry);
                out.push(marker);
            }
            _ => out.push(entry),
        }
    }
    Ok(in_tar_order(out))
}

/// (`dir/` with its slash, or "" at the top; the last name).
fn split(path: &str) -> (&str, &str) {
    let path = path.trim_end_matches('/');
    match path.rfind('/') {
        Some(at) => (&path[..=at], &path[at + 1..]),
        None => ("", path),
    }
}

/// A whiteout marker at `path` with the mtime of the entry it stands for.
fn marker(path: String, of: &LayerEntry) -> LayerEntry {
    let mut marker = LayerEntry::whiteout(path);
    marker.mtime = of.mtime;
    marker
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_their_directory_and_name() {
        assert_eq!(split("a/b/c"), ("a/b/", "c"));
        assert_eq!(split("top"), ("", "top"));
        assert_eq!(split("a/dir/"), ("a/", "dir"));
    }

    #[test]
    fn whiteouts_and_opaque_dirs_become_oci_markers() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        std::fs::create_dir_all(upper.join("etc/gone.d")).unwrap();
        std::fs::write(upper.join("etc/new"), "n").unwrap();
        let node = upper.join("etc/old");
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .expect("mknod a whiteout (needs root)");
        xattr::set(upper.join("etc/gone.d"), OPAQUE, b"y").expect("set trusted xattr (root)");
        let got = upper_entries(upper, Some(9)).unwrap();
        let paths: Vec<&str> = got.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "etc/",
                "etc/.wh.old",
                "etc/gone.d/",
                "etc/gone.d/.wh..wh..opq",
                "etc/new"
            ]
        );
        assert!(got.iter().all(|e| e.mtime == 9));
        assert_eq!(got[1].kind, EntryKind::Whiteout);
        assert!(
            got[2].xattrs.is_empty(),
            "overlay's xattr is not part of the layer"
        );
    }
}
