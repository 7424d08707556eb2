//! What can go wrong building an image, each error naming the path or option concerned.

use std::io;

use crate::store::StoreError;

/// Why a build failed. Nothing is tagged when any of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Io(#[from] crate::fsutil::IoError),
    #[error("writing the layer tar (at {path}): {source}")]
    Archive {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{option}: {reason}")]
    InvalidOption { option: String, reason: String },
    #[error("base image {base:?}: {source}")]
    Base {
        base: String,
        #[source]
        source: StoreError,
    },
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
}

pub(super) type Result<T, E = BuildError> = std::result::Result<T, E>;

pub(crate) use crate::fsutil::io_err;

pub(crate) fn store_err(what: impl Into<String>) -> impl FnOnce(StoreError) -> BuildError {
    let what = what.into();
    move |source| BuildError::Store { what, source }
}
