//! Getting one blob into the store, verified against its digest and size, from wherever the
//! import finds it: a layout directory's blobs/, or already streamed in from an archive.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest};

use super::error::{ImportError, Result, io_err, store_err};
use crate::digest::is_sha256;
use crate::progress::Progress;
use crate::store::Store;

const COPY_CHUNK: usize = 256 << 10;

/// Streams `reader` into a new blob that must hash to `expected`; returns the bytes copied.
/// `what` names the blob in errors. On any failure the partial blob is deleted (the store's
/// `BlobWriter` removes its temp file on drop).
pub(crate) fn copy_verified(
    store: &Store,
    mut reader: impl Read,
    expected: Option<&Digest>,
    what: &str,
    progress: &dyn Progress,
) -> Result<(Digest, u64)> {
    let item = expected
        .map(ToString::to_string)
        .unwrap_or_else(|| what.to_string());
    let mut writer = store
        .blob_writer(expected.cloned())
        .map_err(store_err(what))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ImportError::Read {
                    what: what.to_string(),
                    source,
                });
            }
        };
        writer
            .write_all(&buf[..n])
            .map_err(io_err("write blob into", store.tmp_dir()))?;
        progress.advanced(&item, n as u64);
    }
    writer.commit().map_err(store_err(what))
}

/// Where the blobs an index refers to come from.
pub(crate) trait BlobSource {
    /// Names the source in errors ("the layout /tmp/x", "the archive /tmp/x.tar").
    fn origin(&self) -> String;

    /// Makes sure the blob `descriptor` points at is in the store, verified against the
    /// descriptor's digest and size. `what` names it in errors.
    fn ensure(
        &self,
        store: &Store,
        descriptor: &Descriptor,
        what: &str,
        progress: &dyn Progress,
    ) -> Result<()>;

    /// The error for a blob `what` (`digest`) this source does not hold.
    fn missing(&self, digest: &Digest, what: &str) -> ImportError {
        ImportError::MissingBlob {
            what: what.to_string(),
            digest: digest.to_string(),
            origin: self.origin(),
        }
    }
}

/// Checks that a stored blob has the size its descriptor claims.
fn check_stored_size(store: &Store, descriptor: &Descriptor, what: &str) -> Result<()> {
    let path = store.blob_path(descriptor.digest());
    let actual = std::fs::metadata(&path)
        .map_err(io_err("stat", &path))?
        .len();
    if actual != descriptor.size() {
        return Err(ImportError::SizeMismatch {
            what: what.to_string(),
            expected: descriptor.size(),
            actual,
        });
    }
    Ok(())
}

fn require_sha256(digest: &Digest, what: &str) -> Result<()> {
    if is_sha256(digest) {
        Ok(())
    } else {
        Err(ImportError::Malformed {
            what: what.to_string(),
            detail: format!("digest {digest} uses an algorithm berth does not store (only sha256)"),
        })
    }
}

/// An OCI image layout directory on disk.
#[derive(Debug)]
pub(crate) struct LayoutDir {
    pub dir: PathBuf,
}

impl LayoutDir {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }
}

impl BlobSource for LayoutDir {
    fn origin(&self) -> String {
        format!("the layout {}", self.dir.display())
    }

    fn ensure(
        &self,
        store: &Store,
        descriptor: &Descriptor,
        what: &str,
        progress: &dyn Progress,
    ) -> Result<()> {
        let digest = descriptor.digest();
        require_sha256(digest, what)?;
        let path = self.blob_path(digest);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(self.missing(digest, what)),
            Err(e) => return Err(io_err("open blob", &path)(e).into()),
        };
        let actual = file.metadata().map_err(io_err("stat", &path))?.len();
        if actual != descriptor.size() {
            return Err(ImportError::SizeMismatch {
                what: format!("{what} ({})", path.display()),
                expected: descriptor.size(),
                actual,
            });
        }
        if store.has_blob(digest) {
            progress.note(&format!("{what} {digest} already present"));
            return check_stored_size(store, descriptor, what);
        }
        let item = digest.to_string();
        progress.started(&item, Some(actual));
        // Bound the read by the size we checked, so a file growing under us cannot smuggle in
        // more than the descriptor promised (the digest check would refuse it anyway).
        let label = format!("{what} ({})", path.display());
        copy_verified(store, file.take(actual), Some(digest), &label, progress)?;
        progress.finished(&item);
        Ok(())
    }
}

/// Blobs already streamed into the store from an archive (or present from before: the store
/// is content-addressed, so a blob there is the blob wanted).
#[derive(Debug)]
pub(crate) struct AlreadyStored {
    pub archive: PathBuf,
}

impl BlobSource for AlreadyStored {
    fn origin(&self) -> String {
        format!("the archive {}", self.archive.display())
    }

    fn ensure(
        &self,
        store: &Store,
        descriptor: &Descriptor,
        what: &str,
        _: &dyn Progress,
    ) -> Result<()> {
        let digest = descriptor.digest();
        require_sha256(digest, what)?;
        if !store.has_blob(digest) {
            return Err(self.missing(digest, what));
        }
        check_stored_size(store, descriptor, what)
    }
}

/// True when `path` exists as a directory holding an `oci-layout` file.
pub(crate) fn is_layout_dir(path: &Path) -> bool {
    path.is_dir() && path.join("oci-layout").is_file()
}
