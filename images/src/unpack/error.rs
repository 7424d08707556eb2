//! What can go wrong while unpacking, each error naming the image, layer and tar entry concerned.

use std::io;
use std::path::PathBuf;

use crate::store::StoreError;

/// An unpack failure. Messages start with the image and, where one is concerned, the layer
/// digest and the tar entry path: "image busybox:latest, layer sha256:ab..: entry usr/bin/x: ...".
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("image {image}: {source}")]
    Store {
        image: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "image {image}: the manifest lists {layers} layers but the config has {diff_ids} diff_ids"
    )]
    LayerCountMismatch {
        image: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("image {image}, layer {layer}: unsupported layer media type {media_type:?}")]
    UnsupportedMediaType {
        image: String,
        layer: String,
        media_type: String,
    },
    #[error("image {image}, layer {layer}: blob content hashes to {actual}, not to its digest")]
    BlobDigestMismatch {
        image: String,
        layer: String,
        actual: String,
    },
    #[error(
        "image {image}, layer {layer}: uncompressed content hashes to {actual}, but the config's diff_id is {expected}"
    )]
    DiffIdMismatch {
        image: String,
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("image {image}, layer {layer}: corrupt or truncated {compression} stream: {source}")]
    CorruptStream {
        image: String,
        layer: String,
        compression: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "image {image}, layer {layer}: uncompressed layer is larger than the limit of {limit} bytes"
    )]
    SizeLimitExceeded {
        image: String,
        layer: String,
        limit: u64,
    },
    #[error("image {image}, layer {layer}: invalid tar stream: {source}")]
    InvalidTar {
        image: String,
        layer: String,
        #[source]
        source: io::Error,
    },
    /// An entry berth refuses: a hard link whose target does not exist inside the root, a path
    /// whose parent cannot be created inside the root, an unknown entry type.
    #[error("image {image}, layer {layer}: entry {entry}: {reason}")]
    UnsafeEntry {
        image: String,
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("image {image}, layer {layer}: entry {entry}: {op} {path}: {source}")]
    EntryIo {
        image: String,
        layer: String,
        entry: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {image}, layer {layer}: {op} {path}: {source}")]
    LayerIo {
        image: String,
        layer: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {image}: {op} {path}: {source}")]
    Io {
        image: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {image}: destination {path} exists and is not an empty directory")]
    DestinationNotEmpty { image: String, path: PathBuf },
}

/// The image and layer an error is about; cheap to clone into worker threads.
#[derive(Debug, Clone)]
pub(crate) struct LayerCtx {
    pub image: String,
    pub layer: String,
}

impl LayerCtx {
    pub(super) fn entry_io(
        &self,
        entry: &str,
        op: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> UnpackError {
        UnpackError::EntryIo {
            image: self.image.clone(),
            layer: self.layer.clone(),
            entry: entry.to_string(),
            op,
            path: path.into(),
            source,
        }
    }

    pub(super) fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> UnpackError {
        UnpackError::UnsafeEntry {
            image: self.image.clone(),
            layer: self.layer.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    pub(super) fn layer_io(
        &self,
        op: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> UnpackError {
        UnpackError::LayerIo {
            image: self.image.clone(),
            layer: self.layer.clone(),
            op,
            path: path.into(),
            source,
        }
    }

    pub(super) fn invalid_tar(&self, source: io::Error) -> UnpackError {
        UnpackError::InvalidTar {
            image: self.image.clone(),
            layer: self.layer.clone(),
            source,
        }
    }
}

/// Builds an image-level io error.
pub(crate) fn image_io(
    image: &str,
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> UnpackError {
    let image = image.to_string();
    let path = path.into();
    move |source| UnpackError::Io {
        image,
        op,
        path,
        source,
    }
}
