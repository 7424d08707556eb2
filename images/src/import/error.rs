//! What can go wrong importing an image, each error naming the file, image or blob concerned.

use std::io;
use std::path::PathBuf;

use oci_spec::image::Digest;

use crate::store::StoreError;

/// Why an import failed. Nothing is tagged when any of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "{path} is neither an OCI image layout (a directory with an oci-layout file) nor a tar \
         archive (oci-archive or docker-archive)"
    )]
    UnknownFormat { path: PathBuf },
    #[error(transparent)]
    Io(#[from] crate::fsutil::IoError),
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} is not valid JSON: {source}")]
    InvalidJson {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} has media type {media_type:?}, which berth cannot import")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{what} refers to blob {digest}, which {origin} does not contain")]
    MissingBlob {
        what: String,
        digest: String,
        origin: String,
    },
    #[error("{what}: its content hashes to {actual}, not {expected}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} is {actual} bytes but its descriptor says {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{path} is truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    #[error("{what}: {detail}")]
    Malformed { what: String, detail: String },
    #[error("{origin} has no image named {wanted:?} (names in it: {available})")]
    RefNotFound {
        origin: String,
        wanted: String,
        available: String,
    },
    #[error("{origin} contains no image manifest to import")]
    NothingToImport { origin: String },
    #[error(
        "--tag names one image, but {count} images were selected in {origin}: pick one with --ref"
    )]
    TagForSeveral { origin: String, count: usize },
    #[error(
        "the image {label} in {origin} has no full name (its ref.name is missing or only a \
         tag, like umoci's \"latest\"): name it with --tag NAME:TAG"
    )]
    NeedsName { origin: String, label: String },
    #[error("image name {name:?} in {origin}: {reason}")]
    BadName {
        origin: String,
        name: String,
        reason: String,
    },
    #[error("{what} has no manifest for platform {wanted} (it has: {available})")]
    NoMatchingPlatform {
        what: String,
        wanted: String,
        available: String,
    },
    #[error("{what} nests image indexes deeper than {limit} levels")]
    TooDeep { what: String, limit: usize },
    #[error(
        "layer {layer} of {what}: its uncompressed content hashes to {actual}, but the config's \
         rootfs.diff_ids says {expected}"
    )]
    DiffIdMismatch {
        what: String,
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
}

impl ImportError {
    /// What kind of failure this is (see [`crate::ErrorKind`]): what the archive holds
    /// decides, not the wording.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            Self::Io(_) | Self::Read { .. } => K::Internal,
            Self::UnknownFormat { .. }
            | Self::TagForSeveral { .. }
            | Self::NeedsName { .. }
            | Self::BadName { .. } => K::InvalidArgument,
            Self::RefNotFound { .. }
            | Self::NothingToImport { .. }
            | Self::NoMatchingPlatform { .. } => K::NotFound,
            Self::UnsupportedMediaType { .. } => K::Unsupported,
            Self::TooDeep { .. } => K::ResourceExhausted,
            Self::InvalidJson { .. }
            | Self::MissingBlob { .. }
            | Self::DigestMismatch { .. }
            | Self::SizeMismatch { .. }
            | Self::Truncated { .. }
            | Self::Malformed { .. }
            | Self::DiffIdMismatch { .. } => K::DataLoss,
            Self::Store { source, .. } => source.kind(),
        }
    }
}

pub(super) type Result<T, E = ImportError> = std::result::Result<T, E>;

/// Wraps a store error with what was being done, turning the store's own verification failures
/// into the import's vocabulary so that messages name the object, not a temp file.
pub(crate) fn store_err(what: impl Into<String>) -> impl FnOnce(StoreError) -> ImportError {
    let what = what.into();
    move |source| match source {
        StoreError::DigestMismatch { expected, actual } => ImportError::DigestMismatch {
            what,
            expected,
            actual,
        },
        StoreError::InvalidJson { source, .. } => ImportError::InvalidJson { what, source },
        StoreError::BlobNotFound(digest) => ImportError::MissingBlob {
            what,
            digest: digest.to_string(),
            origin: "the image store".into(),
        },
        source => ImportError::Store { what, source },
    }
}

pub(crate) use crate::fsutil::io_err;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn kinds_follow_what_the_archive_holds() {
        let unknown = ImportError::UnknownFormat {
            path: PathBuf::from("/tmp/x.tar"),
        };
        assert_eq!(unknown.kind(), ErrorKind::InvalidArgument);
        let missing = ImportError::RefNotFound {
            origin: "x.tar".into(),
            wanted: "app:v2".into(),
            available: "app:v1".into(),
        };
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        let truncated = ImportError::Truncated {
            path: PathBuf::from("/tmp/x.tar"),
            detail: "ends inside a header".into(),
        };
        assert_eq!(truncated.kind(), ErrorKind::DataLoss);
        let stored = ImportError::Store {
            what: "tagging".into(),
            source: StoreError::ImageNotFound("app:v2".into()),
        };
        assert_eq!(stored.kind(), ErrorKind::NotFound);
    }
}
