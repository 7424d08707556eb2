//! A COPY/ADD step as layer entries: sources resolved inside their root, `.dockerignore`
//! applied, paths placed under the destination, `--chown`/`--chmod` and SOURCE_DATE_EPOCH
//! applied; and the digest of those entries' content and modes (never their mtimes).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::context::{Ignore, resolve};
use super::error::{ContainerfileError, Result};
use crate::build::BuildError;
use crate::build::walk::{EntryKind, LayerEntry, entry_for, in_tar_order, list_kept};
use crate::fsutil::io_err;

/// A COPY or ADD after expansion.
#[derive(Debug, Clone)]
pub(crate) struct CopySpec {
    pub line: usize,
    pub instruction: &'static str,
    pub sources: Vec<String>,
    /// Absolute path in the image; a trailing `/` means a directory.
    pub dest: String,
    pub owner: Option<(u64, u64)>,
    pub mode: Option<u32>,
    /// SOURCE_DATE_EPOCH: every entry's mtime when set.
    pub epoch: Option<u64>,
}

impl CopySpec {
    fn source_err(&self, source: &str, reason: impl Into<String>) -> ContainerfileError {
        ContainerfileError::Source {
            line: self.line,
            instruction: self.instruction.into(),
            source_path: source.into(),
            reason: reason.into(),
        }
    }
}

/// The mode, owner and group of a directory the image already has (path relative, no `/`).
pub(crate) type ExistingDir<'a> = &'a dyn Fn(&str) -> Option<(u32, u64, u64)>;

/// The entries the step's layer holds, in tar order. `root` is canonical; `ignore` applies to
/// the build context (not to another stage's files); directories above the destination (and
/// the destination directory) that `existing` knows keep their mode and owner.
pub(crate) fn entries(
    root: &Path,
    ignore: &Ignore,
    spec: &CopySpec,
    existing: ExistingDir<'_>,
) -> Result<Vec<LayerEntry>> {
    let dest = spec.dest.trim_start_matches('/').trim_end_matches('/');
    let mut out: Vec<LayerEntry> = Vec::new();
    let mut copied = Vec::new();
    let layer_err = |source: BuildError| ContainerfileError::Layer {
        line: spec.line,
        source: Box::new(source),
    };
    let resolved = spec
        .sources
        .iter()
        .map(|source| {
            let found = resolve(root, source).map_err(|reason| spec.source_err(source, reason))?;
            if !found.relative.is_empty() && ignore.excludes(&found.relative) {
                return Err(spec.source_err(source, "is excluded by .dockerignore"));
            }
            Ok((source, found))
        })
        .collect::<Result<Vec<_>>>()?;
    let into_dir = spec.dest.ends_with('/')
        || resolved.len() > 1
        || resolved.iter().any(|(_, found)| found.path.is_dir());
    for (source, found) in &resolved {
        if found.path.is_dir() {
            let base = found.relative.clone();
            let keep = |relative: &str| {
                let in_context = if base.is_empty() {
                    relative.to_string()
                } else {
                    format!("{base}/{relative}")
                };
                !ignore.excludes(&in_context)
            };
            for mut entry in list_kept(&found.path, &keep).map_err(layer_err)? {
                entry.path = join(dest, &entry.path);
                copied.push(entry);
            }
        } else {
            let name = Path::new(source.as_str())
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| spec.source_err(source, "names no file"))?;
            let target = if into_dir {
                join(dest, name)
            } else {
                dest.to_string()
            };
            if target.is_empty() {
                return Err(spec.source_err(source, "the destination / cannot be a file"));
            }
            copied.extend(entry_for(&found.path, target).map_err(layer_err)?);
        }
    }
    let mtime = spec.epoch.unwrap_or(0);
    // The directories above the destination, created as `mkdir -p` would.
    let mut parents: Vec<&str> = dest.match_indices('/').map(|(at, _)| &dest[..at]).collect();
    if into_dir && !dest.is_empty() {
        parents.push(dest);
    }
    for parent in parents {
        let mut dir = LayerEntry::dir(format!("{parent}/"), 0o755, mtime);
        if let Some((mode, uid, gid)) = existing(parent) {
            (dir.mode, dir.uid, dir.gid) = (mode, uid, gid);
        } else if parent == dest
            && let Some((uid, gid)) = spec.owner
        {
            (dir.uid, dir.gid) = (uid, gid);
        }
        out.push(dir);
    }
    for entry in &mut copied {
        if let Some((uid, gid)) = spec.owner {
            (entry.uid, entry.gid) = (uid, gid);
        }
        if let Some(mode) = spec.mode {
            entry.mode = mode;
        }
        if let Some(epoch) = spec.epoch {
            entry.mtime = epoch;
        }
    }
    out.extend(copied);
    Ok(in_tar_order(last_of_each_path(out)))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Keeps the last entry for each path: a later source overwrites an earlier one.
fn last_of_each_path(entries: Vec<LayerEntry>) -> Vec<LayerEntry> {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        last.insert(entry.path.clone(), index);
    }
    entries
        .into_iter()
        .enumerate()
        .filter(|(index, entry)| last[&entry.path] == *index)
        .map(|(_, entry)| entry)
        .collect()
}

/// sha256 over each entry's path, type, mode, owner, xattrs, link target and content: what
/// the layer holds apart from mtimes, so that touching a file keeps its step cached.
pub(crate) fn content_digest(entries: &[LayerEntry]) -> Result<String> {
    let mut hasher = Sha256::new();
    for entry in entries {
        let kind = match &entry.kind {
            EntryKind::Dir => "dir".to_string(),
            EntryKind::File { len } => format!("file {len}"),
            EntryKind::Symlink { target } => {
                format!("symlink {}", String::from_utf8_lossy(target))
            }
            EntryKind::HardLink { target } => format!("link {target}"),
            EntryKind::CharDevice { major, minor } => format!("char {major}:{minor}"),
            EntryKind::BlockDevice { major, minor } => format!("block {major}:{minor}"),
            EntryKind::Fifo => "fifo".to_string(),
            EntryKind::Whiteout => "whiteout".to_string(),
        };
        let header = format!(
            "{}\0{kind}\0{:o} {} {}\0",
            entry.path, entry.mode, entry.uid, entry.gid
        );
        hasher.update(header.as_bytes());
        for (name, value) in &entry.xattrs {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(value);
            hasher.update([0]);
        }
        if let (EntryKind::File { .. }, Some(source)) = (&entry.kind, &entry.source) {
            let mut file = File::open(source).map_err(io_err("open", source))?;
            io::copy(&mut file, &mut hasher).map_err(io_err("read", source))?;
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No directory exists below the step.
    const NONE: fn(&str) -> Option<(u32, u64, u64)> = |_| None;

    fn spec(sources: &[&str], dest: &str) -> CopySpec {
        CopySpec {
            line: 2,
            instruction: "COPY",
            sources: sources.iter().map(|s| s.to_string()).collect(),
            dest: dest.into(),
            owner: Some((1000, 1000)),
            mode: Some(0o640),
            epoch: Some(7),
        }
    }

    #[test]
    fn files_and_directories_land_under_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        std::fs::write(root.join("src/deep/a"), "a").unwrap();
        std::fs::write(root.join("src/skip.log"), "x").unwrap();
        std::fs::write(root.join(".dockerignore"), "*/skip.log\n").unwrap();
        std::fs::write(root.join("one"), "1").unwrap();
        let ignore = Ignore::load(&root).unwrap();
        let paths = |e: &[LayerEntry]| e.iter().map(|e| e.path.clone()).collect::<Vec<_>>();
        let got = entries(&root, &ignore, &spec(&["src"], "/app"), &NONE).unwrap();
        assert_eq!(paths(&got), ["app/", "app/deep/", "app/deep/a"]);
        assert!(got.iter().all(|e| e.mtime == 7));
        assert_eq!((got[2].uid, got[2].mode), (1000, 0o640));
        let got = entries(&root, &ignore, &spec(&["one"], "/etc/renamed"), &NONE).unwrap();
        assert_eq!(paths(&got), ["etc/", "etc/renamed"]);
        let err = entries(&root, &ignore, &spec(&["src/skip.log"], "/x"), &NONE).unwrap_err();
        assert!(err.to_string().contains(".dockerignore"), "{err}");
    }

    #[test]
    fn existing_directories_keep_their_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("one"), "1").unwrap();
        let below = |path: &str| (path == "tmp").then_some((0o1777, 0, 0));
        let got = entries(
            &root,
            &Ignore::default(),
            &spec(&["one"], "/tmp/sub/"),
            &below,
        )
        .unwrap();
        let modes: Vec<(&str, u32, u64)> = got
            .iter()
            .map(|e| (e.path.as_str(), e.mode, e.uid))
            .collect();
        assert_eq!(
            modes,
            [
                ("tmp/", 0o1777, 0),
                ("tmp/sub/", 0o755, 1000),
                ("tmp/sub/one", 0o640, 1000)
            ]
        );
    }

    /// The keys of two COPY steps (a, then b) chained on scratch, as execute builds them.
    fn keys(root: &Path) -> [String; 2] {
        use crate::containerfile::cache::{base_key, step_key};
        let ignore = Ignore::default();
        let first =
            content_digest(&entries(root, &ignore, &spec(&["a"], "/a"), &NONE).unwrap()).unwrap();
        let second =
            content_digest(&entries(root, &ignore, &spec(&["b"], "/b"), &NONE).unwrap()).unwrap();
        let one = step_key(&base_key("scratch"), "COPY a /a", Some(&first));
        let two = step_key(&one, "COPY b /b", Some(&second));
        [one, two]
    }

    #[test]
    fn keys_ignore_mtimes_and_follow_content_down_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a"), "a").unwrap();
        std::fs::write(root.join("b"), "b").unwrap();
        let before = keys(&root);
        assert_eq!(keys(&root), before, "same inputs, same keys");
        let old = std::fs::File::options()
            .write(true)
            .open(root.join("a"))
            .unwrap();
        old.set_modified(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(keys(&root), before, "an mtime is not part of a key");
        std::fs::write(root.join("a"), "A").unwrap();
        let after = keys(&root);
        assert_ne!(after[0], before[0], "the changed step's key changes");
        assert_ne!(after[1], before[1], "and so does every later one");
    }
}
