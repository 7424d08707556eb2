//! The build context: `.dockerignore` rules, and COPY sources resolved so that nothing outside
//! the context (or a stage's root) is ever read, whether by `..` or through a symlink.

use std::io;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use super::error::{ContainerfileError, Result};
use crate::fsutil::io_err;

/// `.dockerignore` rules in file order; the last one matching a path decides.
#[derive(Debug, Default)]
pub(crate) struct Ignore {
    /// (pattern, excludes): `!pattern` lines re-include.
    rules: Vec<(GlobMatcher, bool)>,
}

impl Ignore {
    /// The rules of `CONTEXT/.dockerignore`, or none when there is no such file.
    pub(crate) fn load(context: &Path) -> Result<Self> {
        let path = context.join(".dockerignore");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io_err("read", &path)(e).into()),
        };
        let mut rules = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (excludes, pattern) = match line.strip_prefix('!') {
                Some(rest) => (false, rest.trim()),
                None => (true, line),
            };
            // docker cleans patterns: no leading `/` or `./`, no trailing `/`.
            let pattern = pattern
                .trim_start_matches("./")
                .trim_start_matches('/')
                .trim_end_matches('/');
            let matcher = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| ContainerfileError::InvalidOption {
                    option: format!(".dockerignore line {}", index + 1),
                    reason: format!("{pattern:?}: {e}"),
                })?
                .compile_matcher();
            rules.push((matcher, excludes));
        }
        Ok(Self { rules })
    }

    /// Whether the context-relative `path` is left out: a pattern matches the path itself or
    /// any directory above it, as docker's do.
    pub(crate) fn excludes(&self, path: &str) -> bool {
        let path = path.trim_end_matches('/');
        let mut excluded = false;
        for (matcher, excludes) in &self.rules {
            let mut prefix = Some(path);
            while let Some(candidate) = prefix {
                if matcher.is_match(candidate) {
                    excluded = *excludes;
                    break;
                }
                prefix = candidate.rsplit_once('/').map(|(parent, _)| parent);
            }
        }
        excluded
    }
}

/// A COPY source found inside its root.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The file itself, every symlink on the way followed.
    pub path: PathBuf,
    /// Its path relative to the root (empty for the root itself).
    pub relative: String,
}

/// Finds `source` under `root` (already canonical); the reason is returned when it lies
/// outside, does not exist or uses what this slice does not handle.
pub(crate) fn resolve(root: &Path, source: &str) -> std::result::Result<Resolved, String> {
    if source.contains(['*', '?', '[']) {
        return Err("wildcards in sources are not supported yet".into());
    }
    if source.contains("://") {
        return Err("URL sources are not supported; copy local files".into());
    }
    let mut clean = PathBuf::new();
    for part in Path::new(source).components() {
        match part {
            Component::Normal(name) => clean.push(name),
            Component::ParentDir => {
                if !clean.pop() {
                    return Err("is outside the build context".into());
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    let joined = root.join(&clean);
    let path = joined.canonicalize().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "does not exist in the build context".to_string(),
        _ => format!("cannot be read: {e}"),
    })?;
    let relative = path
        .strip_prefix(root)
        .map_err(|_| "leads outside the build context through a symlink".to_string())?
        .to_str()
        .ok_or_else(|| "its path is not valid UTF-8".to_string())?
        .to_string();
    Ok(Resolved { path, relative })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("in")).unwrap();
        assert_eq!(resolve(&root, "/sub/../sub/f").unwrap().relative, "sub/f");
        assert_eq!(resolve(&root, "in").unwrap().relative, "sub/f");
        assert!(resolve(&root, "../x").unwrap_err().contains("outside"));
        assert!(
            resolve(&root, "out/passwd")
                .unwrap_err()
                .contains("symlink")
        );
        assert!(
            resolve(&root, "nope")
                .unwrap_err()
                .contains("does not exist")
        );
    }

    #[test]
    fn ignore_rules_match_parents_and_last_rule_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".dockerignore"),
            "# comment\n/build/\n*.log\n!keep.log\ndocs/**/*.tmp\n",
        )
        .unwrap();
        let ignore = Ignore::load(dir.path()).unwrap();
        assert!(ignore.excludes("build"));
        assert!(ignore.excludes("build/out/a.o"));
        assert!(ignore.excludes("x.log"));
        assert!(!ignore.excludes("keep.log"));
        assert!(!ignore.excludes("sub/x.log"), "* does not cross /");
        assert!(ignore.excludes("docs/a/b/c.tmp"));
        assert!(!ignore.excludes("src/main.rs"));
    }
}
