//! Downloading one blob into the store: streamed to a verifying `BlobWriter` on a blocking
//! thread, checked against the descriptor's size and digest, with progress reported.

use std::io::Write;

use oci_spec::image::Descriptor;
use tokio::sync::mpsc;

use super::client::RegistryClient;
use super::error::RegistryError;
use crate::fsutil::IoError;
use crate::progress::Progress;
use crate::store::{BlobWriter, Store, StoreError};

/// Chunks in flight between the network and the disk writer, per blob.
const CHUNKS_IN_FLIGHT: usize = 16;

/// Whether a blob had to be downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobFetch {
    Downloaded,
    AlreadyPresent,
}

/// Makes sure the store holds the blob `descriptor` names, downloading it if it does not.
/// On any failure nothing is left behind: the uncommitted temp file is deleted when its
/// writer is dropped.
pub async fn fetch_blob(
    client: &RegistryClient,
    store: &Store,
    descriptor: &Descriptor,
    progress: &dyn Progress,
) -> Result<BlobFetch, RegistryError> {
    let digest = descriptor.digest();
    let object = format!("blob {digest}");
    let item = digest.to_string();
    if store.has_blob(digest) {
        progress.note(&format!("{item}: already present"));
        return Ok(BlobFetch::AlreadyPresent);
    }
    let expected_size = descriptor.size();
    let target = client.target().clone();
    let store_error = |source: StoreError| match source {
        StoreError::DigestMismatch { expected, actual } => RegistryError::DigestMismatch {
            target: target.clone(),
            object: object.clone(),
            expected: expected.to_string(),
            actual: actual.to_string(),
            expected_from: "the manifest",
        },
        source => RegistryError::Store {
            target: target.clone(),
            object: object.clone(),
            source: Box::new(source),
        },
    };
    let task_error = |e: tokio::task::JoinError| RegistryError::Task {
        target: target.clone(),
        object: object.clone(),
        reason: e.to_string(),
    };

    let (mut response, url) = client.blob(digest, &object).await?;
    if let Some(length) = response.content_length()
        && length != expected_size
    {
        return Err(RegistryError::SizeMismatch {
            target: target.clone(),
            object: object.clone(),
            expected: expected_size,
            actual: length,
        });
    }
    let writer = {
        let store = store.clone();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || store.blob_writer(Some(digest)))
            .await
            .map_err(task_error)?
            .map_err(store_error)?
    };
    // Disk writes happen on a blocking thread so that a slow disk does not stall the other
    // downloads sharing the runtime; the channel's bound keeps memory use small.
    let (chunks, mut receiver) = mpsc::channel::<bytes::Bytes>(CHUNKS_IN_FLIGHT);
    let disk = tokio::task::spawn_blocking(move || -> (BlobWriter, std::io::Result<()>) {
        let mut writer = writer;
        while let Some(chunk) = receiver.blocking_recv() {
            if let Err(e) = writer.write_all(&chunk) {
                return (writer, Err(e));
            }
        }
        (writer, Ok(()))
    });

    progress.started(&item, Some(expected_size));
    let mut received: u64 = 0;
    let network_result = loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break Ok(()),
            Err(source) => {
                break Err(RegistryError::Transport {
                    target: target.clone(),
                    object: object.clone(),
                    url: url.clone(),
                    source,
                });
            }
        };
        received += chunk.len() as u64;
        if received > expected_size {
            // A registry sending more than the descriptor says is wrong or hostile: stop.
            break Err(RegistryError::SizeMismatch {
                target: target.clone(),
                object: object.clone(),
                expected: expected_size,
                actual: received,
            });
        }
        let length = chunk.len() as u64;
        if chunks.send(chunk).await.is_err() {
            // The writer stopped on an I/O error, which it reports below.
            break Ok(());
        }
        progress.advanced(&item, length);
    };
    drop(chunks);
    let (writer, disk_result) = disk.await.map_err(task_error)?;
    network_result?;
    disk_result.map_err(|source| {
        store_error(StoreError::Io(IoError {
            op: "write blob into",
            path: store.tmp_dir(),
            source,
        }))
    })?;
    if received != expected_size {
        return Err(RegistryError::SizeMismatch {
            target: target.clone(),
            object: object.clone(),
            expected: expected_size,
            actual: received,
        });
    }
    tokio::task::spawn_blocking(move || writer.commit())
        .await
        .map_err(task_error)?
        .map_err(store_error)?;
    progress.finished(&item);
    tracing::debug!(%digest, bytes = received, "blob stored");
    Ok(BlobFetch::Downloaded)
}
