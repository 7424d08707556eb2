//! Downloading one blob into the store: streamed to a verifying `BlobWriter` on a blocking
//! thread, checked against the descriptor's size and digest, with progress reported.

use std::io::Write;
use std::sync::Arc;

use oci_spec::image::Descriptor;
use reqwest::Response;
use tokio::sync::mpsc;

use super::client::RegistryClient;
use super::error::{RegistryError, Target};
use crate::fsutil::IoError;
use crate::progress::Progress;
use crate::store::{BlobWriter, Store, StoreError};

/// Chunks in flight between the network and the disk writer, per blob.
const CHUNKS_IN_FLIGHT: usize = 16;

/// Whether a blob had to be downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlobFetch {
    Downloaded,
    AlreadyPresent,
}

/// Makes sure the store holds the blob `descriptor` names, downloading it if it does not.
/// On any failure nothing is left behind: the uncommitted temp file is deleted when its
/// writer is dropped.
pub(super) async fn fetch_blob(
    client: &RegistryClient,
    store: &Store,
    descriptor: &Descriptor,
    progress: &dyn Progress,
) -> Result<BlobFetch, RegistryError> {
    let digest = descriptor.digest();
    let blob = Blob {
        target: client.target().clone(),
        object: format!("blob {digest}"),
        expected_size: descriptor.size(),
    };
    let item = digest.to_string();
    if store.has_blob(digest) {
        progress.note(&format!("{item}: already present"));
        return Ok(BlobFetch::AlreadyPresent);
    }

    let (response, url) = client.blob(digest, &blob.object).await?;
    if let Some(length) = response.content_length()
        && length != blob.expected_size
    {
        return Err(blob.size_mismatch(length));
    }
    let writer = {
        let store = store.clone();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || store.blob_writer(Some(digest)))
            .await
            .map_err(|e| blob.task_error(&e))?
            .map_err(|e| blob.store_error(e))?
    };
    // Disk writes happen on a blocking thread so that a slow disk does not stall the other
    // downloads sharing the runtime; the channel's bound keeps memory use small.
    let (chunks, receiver) = mpsc::channel::<bytes::Bytes>(CHUNKS_IN_FLIGHT);
    let disk = tokio::task::spawn_blocking(move || write_chunks(writer, receiver));

    progress.started(&item, Some(blob.expected_size));
    let (network_result, received) = blob.receive(response, &url, chunks, &item, progress).await;
    let (writer, disk_result) = disk.await.map_err(|e| blob.task_error(&e))?;
    network_result?;
    disk_result.map_err(|source| {
        blob.store_error(StoreError::Io(IoError {
            op: "write blob into",
            path: store.tmp_dir(),
            source,
        }))
    })?;
    if received != blob.expected_size {
        return Err(blob.size_mismatch(received));
    }
    tokio::task::spawn_blocking(move || writer.commit())
        .await
        .map_err(|e| blob.task_error(&e))?
        .map_err(|e| blob.store_error(e))?;
    progress.finished(&item);
    tracing::debug!(%digest, bytes = received, "blob stored");
    Ok(BlobFetch::Downloaded)
}

/// The blob being fetched, as its errors name it.
struct Blob {
    target: Arc<Target>,
    object: String,
    expected_size: u64,
}

impl Blob {
    fn store_error(&self, source: StoreError) -> RegistryError {
        match source {
            StoreError::DigestMismatch { expected, actual } => RegistryError::DigestMismatch {
                target: self.target.clone(),
                object: self.object.clone(),
                expected: expected.to_string(),
                actual: actual.to_string(),
                expected_from: "the manifest",
            },
            source => RegistryError::Store {
                target: self.target.clone(),
                object: self.object.clone(),
                source: Box::new(source),
            },
        }
    }

    fn task_error(&self, e: &tokio::task::JoinError) -> RegistryError {
        RegistryError::Task {
            target: self.target.clone(),
            object: self.object.clone(),
            reason: e.to_string(),
        }
    }

    fn size_mismatch(&self, actual: u64) -> RegistryError {
        RegistryError::SizeMismatch {
            target: self.target.clone(),
            object: self.object.clone(),
            expected: self.expected_size,
            actual,
        }
    }

    /// Passes the response body to the disk writer chunk by chunk until it ends, fails, or
    /// exceeds the expected size; returns how it ended and the bytes received. Closes
    /// `chunks` on return, which ends the writer.
    async fn receive(
        &self,
        mut response: Response,
        url: &str,
        chunks: mpsc::Sender<bytes::Bytes>,
        item: &str,
        progress: &dyn Progress,
    ) -> (Result<(), RegistryError>, u64) {
        let mut received: u64 = 0;
        let result = loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break Ok(()),
                Err(source) => {
                    break Err(RegistryError::Transport {
                        target: self.target.clone(),
                        object: self.object.clone(),
                        url: url.to_string(),
                        source,
                    });
                }
            };
            let length = chunk.len() as u64;
            received += length;
            if received > self.expected_size {
                // A registry sending more than the descriptor says is wrong or hostile: stop.
                break Err(self.size_mismatch(received));
            }
            if chunks.send(chunk).await.is_err() {
                // The writer stopped on an I/O error, which it reports itself.
                break Ok(());
            }
            progress.advanced(item, length);
        };
        (result, received)
    }
}

/// The disk side: writes chunks until the channel closes or a write fails.
fn write_chunks(
    mut writer: BlobWriter,
    mut receiver: mpsc::Receiver<bytes::Bytes>,
) -> (BlobWriter, std::io::Result<()>) {
    while let Some(chunk) = receiver.blocking_recv() {
        if let Err(e) = writer.write_all(&chunk) {
            return (writer, Err(e));
        }
    }
    (writer, Ok(()))
}
