//! What can go wrong building an image, each error naming the path or option concerned.

use std::io;
use std::path::PathBuf;

use crate::store::StoreError;

/// Why a build failed. Nothing is tagged when any of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.into();
    move |source| BuildError::Io { op, path, source }
}

pub(crate) fn store_err(what: impl Into<String>) -> impl FnOnce(StoreError) -> BuildError {
    let what = what.into();
    move |source| BuildError::Store { what, source }
}
