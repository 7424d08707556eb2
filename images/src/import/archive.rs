//! Streaming an oci-archive or docker-archive tar once, putting its blobs straight into the
//! store (nothing is extracted to a temp directory); the import module then imports the
//! docker or OCI images from what was stored.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::Digest;

use super::blobs::copy_verified;
use super::error::{ImportError, Result, io_err};
use crate::digest::sha256_from_hex;
use crate::progress::Progress;
use crate::store::{MAX_JSON_BLOB, Store};

const BLOCK_LEN: usize = 512;
const BLOCK: u64 = BLOCK_LEN as u64;

/// Top-level files kept in memory rather than stored as blobs.
const SMALL_FILES: &[&str] = &["index.json", "oci-layout", "manifest.json", "repositories"];

/// What streaming the archive left behind.
#[derive(Debug, Default)]
pub(crate) struct Streamed {
    /// Archive path (normalized, no `./`) of every file stored as a blob.
    pub blobs: BTreeMap<String, (Digest, u64)>,
    /// Symlink path to target path, both normalized (old `docker save` links shared layers).
    pub links: BTreeMap<String, String>,
    /// The small top-level files by name.
    pub small: BTreeMap<String, Vec<u8>>,
}

impl Streamed {
    /// The stored blob at `member`, following symlinks within the archive.
    pub(super) fn lookup(&self, member: &str) -> Option<&(Digest, u64)> {
        let mut path = normalize(member)?;
        for _ in 0..16 {
            if let Some(blob) = self.blobs.get(&path) {
                return Some(blob);
            }
            path = self.links.get(&path)?.clone();
        }
        None
    }
}

/// True when the first block of `path` is a tar header (ustar magic or a valid checksum).
pub(crate) fn looks_like_tar(path: &Path) -> Result<bool> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut block = [0u8; BLOCK_LEN];
    let mut filled = 0;
    while filled < block.len() {
        match file
            .read(&mut block[filled..])
            .map_err(io_err("read", path))?
        {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    if &block[257..262] == b"ustar" {
        return Ok(true);
    }
    let header = tar::Header::from_byte_slice(&block);
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|b| u32::from(*b))
        .sum::<u32>()
        + 8 * 32;
    Ok(header.cksum().is_ok_and(|cksum| cksum == sum) && block.iter().any(|b| *b != 0))
}

/// `./a//b/` -> `a/b`; `None` for paths that climb out (`..`) or are absolute.
fn normalize(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// Whether a member outside `blobs/` is worth storing: docker-archive layers and configs.
fn is_docker_payload(path: &str) -> bool {
    [".tar", ".tar.gz", ".tgz", ".json"]
        .iter()
        .any(|ext| path.ends_with(ext))
}

/// Reads the archive once, storing `blobs/sha256/<hex>` verified against their names and
/// docker payloads hashed as they go.
pub(crate) fn stream_into_store(
    store: &Store,
    path: &Path,
    progress: &dyn Progress,
) -> Result<Streamed> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let truncated = |detail: String| ImportError::Truncated {
        path: path.to_path_buf(),
        detail,
    };
    let archive_len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut archive = tar::Archive::new(&file);
    let mut streamed = Streamed::default();
    // Where the last member's data (padded to a block) ends: the end-of-archive marker must
    // follow, or the archive was cut off exactly between members.
    let mut end_of_members = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| truncated(format!("cannot read its first header: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| truncated(format!("a header is unreadable: {e}")))?;
        let size = entry.size();
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let data_end = entry.raw_file_position() + size;
        if data_end > archive_len {
            // Caught before copying: a cut-off member would otherwise just hash wrong.
            return Err(truncated(format!(
                "member {raw:?} needs {size} bytes but the file ends {} bytes into it",
                archive_len.saturating_sub(entry.raw_file_position())
            )));
        }
        end_of_members =
            end_of_members.max(entry.raw_file_position() + size.div_ceil(BLOCK) * BLOCK);
        let Some(name) = normalize(&raw) else {
            return Err(ImportError::Malformed {
                what: format!("member {raw:?} of {}", path.display()),
                detail: "its path is absolute or leaves the archive".into(),
            });
        };
        let what = format!("member {name} of {}", path.display());
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().ok().flatten() {
                let target = target.to_string_lossy();
                // Symlinks are relative to their directory; hard links to the archive root.
                let joined = match (kind.is_symlink(), name.rsplit_once('/')) {
                    (true, Some((dir, _))) => format!("{dir}/{target}"),
                    _ => target.into_owned(),
                };
                if let Some(target) = normalize(&joined) {
                    streamed.links.insert(name, target);
                }
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if SMALL_FILES.contains(&name.as_str()) {
            if size > MAX_JSON_BLOB {
                return Err(ImportError::Malformed {
                    what,
                    detail: format!(
                        "{size} bytes is more than a JSON document may be ({MAX_JSON_BLOB})"
                    ),
                });
            }
            // A hint only; the size was checked against the limit above.
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            entry
                .read_to_end(&mut bytes)
                .map_err(|source| ImportError::Read {
                    what: what.clone(),
                    source,
                })?;
            if (bytes.len() as u64) < size {
                return Err(truncated(format!(
                    "{name} has {} of its {size} bytes",
                    bytes.len()
                )));
            }
            streamed.small.insert(name, bytes);
            continue;
        }
        let expected = match name.strip_prefix("blobs/") {
            Some(rest) => Some(blob_digest(rest, &what)?),
            None if is_docker_payload(&name) => None,
            None => continue,
        };
        let item = expected
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| what.clone());
        progress.started(&item, Some(size));
        let (digest, copied) = match &expected {
            // Content-addressed: an identical blob is already there; tar skips the data.
            Some(digest) if store.has_blob(digest) => (digest.clone(), size),
            _ => copy_verified(store, &mut entry, expected.as_ref(), &what, progress)?,
        };
        if copied < size {
            return Err(truncated(format!(
                "{name} has {copied} of its {size} bytes"
            )));
        }
        progress.finished(&item);
        streamed.blobs.insert(name, (digest, size));
    }
    check_end_marker(&file, path, end_of_members)?;
    Ok(streamed)
}

/// `sha256/<hex>` -> the digest, checking the form.
fn blob_digest(rest: &str, what: &str) -> Result<Digest> {
    let bad = |detail: String| ImportError::Malformed {
        what: what.to_string(),
        detail,
    };
    let (algorithm, hex) = rest
        .split_once('/')
        .ok_or_else(|| bad("a blob must be at blobs/<algorithm>/<hex>".into()))?;
    if algorithm != "sha256" {
        return Err(bad(format!(
            "berth stores only sha256 blobs, not {algorithm}"
        )));
    }
    sha256_from_hex(hex).map_err(|e| bad(format!("{hex:?} is not a sha256 digest: {e}")))
}

/// Tar archives end with zero blocks; a file that stops right after a member was cut short.
fn check_end_marker(file: &File, path: &Path, offset: u64) -> Result<()> {
    let mut block = [0u8; BLOCK_LEN];
    let complete = file.read_exact_at(&mut block, offset).is_ok() && block.iter().all(|b| *b == 0);
    if complete {
        Ok(())
    } else {
        Err(ImportError::Truncated {
            path: PathBuf::from(path),
            detail: format!("no end-of-archive marker after the last member (at byte {offset})"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_dots_and_refuses_escapes() {
        assert_eq!(
            normalize("./blobs//sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(normalize("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize("../x"), None);
        assert_eq!(normalize("/etc/passwd"), None);
    }
}
