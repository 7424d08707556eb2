//! Which repositories of which registries hold a blob, as far as this store knows (it pulled
//! the blob from there or pushed it there), so that a push to another repository of the same
//! registry can mount the blob instead of uploading it.
//!
//! One small file per blob, `DATA_DIR/blob-sources/<hex>`, of `registry repository` lines. A
//! record is only a hint: a stale one costs one mount request the registry declines (it then
//! opens an ordinary upload), so records are appended without locks and `prune` leaves them.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;

const DIR: &str = "blob-sources";

fn path(data_dir: &Path, digest: &Digest) -> PathBuf {
    data_dir.join(DIR).join(digest.digest())
}

/// The `(registry, repository)` pairs recorded for a blob, oldest first.
fn read(data_dir: &Path, digest: &Digest) -> Vec<(String, String)> {
    // A missing or unreadable record only means no mount is tried.
    let text = fs::read_to_string(path(data_dir, digest)).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(registry, repository)| (registry.to_string(), repository.to_string()))
        .collect()
}

/// Notes that `repository` on `registry` holds the blob. A line is a single small append, so
/// concurrent writers cannot interleave within it; a duplicate from a race is harmless.
pub(super) fn record(
    data_dir: &Path,
    digest: &Digest,
    registry: &str,
    repository: &str,
) -> io::Result<()> {
    let known = read(data_dir, digest);
    if known
        .iter()
        .any(|(reg, repo)| reg == registry && repo == repository)
    {
        return Ok(());
    }
    fs::create_dir_all(data_dir.join(DIR))?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path(data_dir, digest))?;
    file.write_all(format!("{registry} {repository}\n").as_bytes())
}

/// Records every blob in `digests` as held by `repository` on `registry`; failures are logged,
/// never fatal (the transfer itself succeeded).
pub(super) fn record_all<'a>(
    data_dir: &Path,
    digests: impl IntoIterator<Item = &'a Digest>,
    registry: &str,
    repository: &str,
) {
    for digest in digests {
        if let Err(error) = record(data_dir, digest, registry, repository) {
            tracing::warn!(%digest, %error, "could not record where the blob is held");
        }
    }
}

/// Another repository of `registry` recorded as holding the blob (the latest recorded), to
/// mount it from into `repository`.
pub(super) fn mount_source(
    data_dir: &Path,
    digest: &Digest,
    registry: &str,
    repository: &str,
) -> Option<String> {
    read(data_dir, digest)
        .into_iter()
        .rev()
        .find(|(reg, repo)| reg == registry && repo != repository)
        .map(|(_, repo)| repo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_other_repositories_of_the_same_registry() {
        let dir = tempfile::tempdir().unwrap();
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(mount_source(dir.path(), &digest, "r:5000", "b"), None);
        record(dir.path(), &digest, "r:5000", "a").unwrap();
        record(dir.path(), &digest, "r:5000", "a").unwrap();
        record(dir.path(), &digest, "other:5000", "c").unwrap();
        assert_eq!(read(dir.path(), &digest).len(), 2, "no duplicate line");
        assert_eq!(
            mount_source(dir.path(), &digest, "r:5000", "b").as_deref(),
            Some("a")
        );
        // Its own repository is no source, nor another registry's.
        assert_eq!(mount_source(dir.path(), &digest, "r:5000", "a"), None);
        assert_eq!(mount_source(dir.path(), &digest, "x:1", "b"), None);
    }
}
