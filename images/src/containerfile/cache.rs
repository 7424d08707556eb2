//! Step cache keys and the layer cache: `DATA/build-cache/<key>` names the layer a COPY/ADD
//! step made, so that a rebuild with the same inputs reuses it instead of writing a new one.

use std::io::Write;
use std::path::PathBuf;

use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::error::Result;
use crate::fsutil::io_err;
use crate::store::Store;

/// Bumped when what a key covers changes, so that old entries stop matching.
const KEY_VERSION: &str = "berth-build-v1";

/// The key of a stage's starting point: `scratch` or the base image's manifest digest.
pub(crate) fn base_key(base: &str) -> String {
    step_key(KEY_VERSION, &format!("FROM {base}"), None)
}

/// The key of a step: its parent's key, the instruction after ARG/ENV expansion and, for
/// COPY/ADD, the digest of the sources' content and modes.
pub(crate) fn step_key(parent: &str, instruction: &str, sources: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    for part in [parent, instruction, sources.unwrap_or("-")] {
        // Length-prefixed, so that no two different triples hash the same bytes.
        hasher.update(part.len().to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// A layer a step made, as the cache remembers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedLayer {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// The cache directory of a store.
#[derive(Debug, Clone)]
pub(crate) struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    pub(crate) fn new(store: &Store) -> Self {
        Self {
            dir: store.data_dir().join("build-cache"),
        }
    }

    /// The layer cached under `key`, if its blob is still in the store (prune may have taken
    /// it; the entry is then a miss).
    pub(crate) fn get(&self, store: &Store, key: &str) -> Option<CachedLayer> {
        let bytes = std::fs::read(self.dir.join(key)).ok()?;
        let cached: CachedLayer = serde_json::from_slice(&bytes)
            .inspect_err(|e| tracing::warn!(key, error = %e, "ignoring an unreadable cache entry"))
            .ok()?;
        store.has_blob(&cached.digest).then_some(cached)
    }

    /// Records `layer` under `key`, atomically: a reader sees the old entry or the new one.
    pub(crate) fn put(&self, key: &str, layer: &CachedLayer) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let mut tmp = tempfile::NamedTempFile::with_prefix_in(".entry-", &self.dir)
            .map_err(io_err("create a temp file in", &self.dir))?;
        let bytes = serde_json::to_vec(layer).expect("a cache entry always serializes");
        tmp.write_all(&bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io_err("write", tmp.path()))?;
        let target = self.dir.join(key);
        tmp.persist(&target)
            .map_err(|e| io_err("rename into", &target)(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_chain_and_separate_their_parts() {
        let base = base_key("scratch");
        assert_eq!(base, base_key("scratch"));
        assert_ne!(base, base_key("sha256:00"));
        let one = step_key(&base, "COPY a /a", Some("d1"));
        assert_eq!(one, step_key(&base, "COPY a /a", Some("d1")));
        assert_ne!(one, step_key(&base, "COPY a /a", Some("d2")));
        assert_ne!(step_key("ab", "c", None), step_key("a", "bc", None));
    }
}
