//! One layer from blob to directory: the blob is decoded and verified on a helper thread while
//! this thread extracts its entries.

use std::io;
use std::path::Path;

use oci_spec::image::Descriptor;

use super::error::{LayerCtx, UnpackError};
use super::extract::{Extractor, LayerFacts, WhiteoutMode};
use super::media::Compression;
use super::resolve::Root;
use super::stream::{self, BlobSpec, PipeReader, StreamFailure};
use crate::progress::Progress;
use crate::store::Store;

/// A layer of an image, with what it must hash to.
#[derive(Debug, Clone)]
pub(super) struct LayerJob {
    pub ctx: LayerCtx,
    pub descriptor: Descriptor,
    /// `sha256:<hex>` from the config's rootfs.diff_ids.
    pub diff_id: String,
    pub compression: Compression,
}

impl LayerJob {
    /// The hex of the diff_id: the layer's directory name.
    pub(super) fn diff_id_hex(&self) -> &str {
        self.diff_id
            .strip_prefix("sha256:")
            .unwrap_or(&self.diff_id)
    }
}

/// A layer extracted and verified.
#[derive(Debug)]
pub(super) struct Extracted {
    pub facts: LayerFacts,
    pub uncompressed_bytes: u64,
}

/// Extracts the layer into `target` (an existing directory). On error `target` holds a partial
/// tree: the caller owns its removal.
pub(super) fn extract_layer(
    store: &Store,
    job: &LayerJob,
    target: &Path,
    mode: WhiteoutMode,
    max_layer_bytes: u64,
    progress: &dyn Progress,
) -> Result<Extracted, UnpackError> {
    let ctx = &job.ctx;
    let blob = store
        .open_blob(job.descriptor.digest())
        .map_err(|source| UnpackError::Store {
            image: ctx.image.clone(),
            source,
        })?;
    let root =
        Root::open(target).map_err(|e| ctx.layer_io("open layer directory", target, e.into()))?;
    tracing::debug!(layer = %ctx.layer, target = %target.display(), "extracting layer");
    progress.started(&ctx.layer, Some(job.descriptor.size()));
    let (tx, pipe) = stream::channel();
    let spec = BlobSpec {
        blob,
        compression: job.compression,
        blob_digest: job.descriptor.digest(),
        diff_id: &job.diff_id,
        max_uncompressed: max_layer_bytes,
        item: &ctx.layer,
        progress,
    };
    let (extracted, decoded) = std::thread::scope(|scope| {
        let decoder = scope.spawn(move || stream::decode(spec, tx));
        // Returns only after dropping the pipe, so a blocked decoder always wakes up.
        let extracted = extract_entries(pipe, root, ctx, mode);
        let decoded = decoder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (extracted, decoded)
    });
    progress.finished(&ctx.layer);
    match decoded {
        Ok(summary) => extracted.map(|facts| Extracted {
            facts,
            uncompressed_bytes: summary.uncompressed_bytes,
        }),
        Err(StreamFailure::Abandoned) => Err(extracted.err().unwrap_or_else(|| {
            ctx.invalid_tar(io::Error::other(
                "tar reader stopped before the end of the stream",
            ))
        })),
        Err(failure) => Err(stream_error(ctx, failure)),
    }
}

fn extract_entries(
    pipe: PipeReader,
    root: Root,
    ctx: &LayerCtx,
    mode: WhiteoutMode,
) -> Result<LayerFacts, UnpackError> {
    let mut archive = tar::Archive::new(pipe);
    let mut extractor = Extractor::new(root, ctx, mode);
    for entry in archive.entries().map_err(|e| ctx.invalid_tar(e))? {
        let mut entry = entry.map_err(|e| ctx.invalid_tar(e))?;
        extractor.apply(&mut entry)?;
    }
    let facts = extractor.finish()?;
    // The decoder verifies digests over the whole stream: let it reach the end.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| ctx.invalid_tar(e))?;
    Ok(facts)
}

fn stream_error(ctx: &LayerCtx, failure: StreamFailure) -> UnpackError {
    let (image, layer) = (ctx.image.clone(), ctx.layer.clone());
    match failure {
        StreamFailure::WrongMagic { declared, found } => UnpackError::CorruptStream {
            image,
            layer,
            compression: declared.name(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the media type says {} but the content is {}",
                    declared.name(),
                    found.name()
                ),
            ),
        },
        StreamFailure::Corrupt(compression, source) => UnpackError::CorruptStream {
            image,
            layer,
            compression: compression.name(),
            source,
        },
        StreamFailure::SizeLimit(limit) => UnpackError::SizeLimitExceeded {
            image,
            layer,
            limit,
        },
        StreamFailure::BlobDigest(actual) => UnpackError::BlobDigestMismatch {
            image,
            layer,
            actual: actual.to_string(),
        },
        StreamFailure::DiffId { expected, actual } => UnpackError::DiffIdMismatch {
            image,
            layer,
            expected,
            actual: actual.to_string(),
        },
        StreamFailure::Abandoned => ctx.invalid_tar(io::Error::other("extraction stopped")),
    }
}
