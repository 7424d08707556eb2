//! A whole push (OCI distribution spec, "Push"): every blob of an image (a few at a time), then
//! its manifest under the destination's tag, last, so that a push cut short never leaves a tag
//! pointing at blobs the registry lacks.
//!
//! Push extends berth's own pull client rather than taking the `oci-client` crate: the
//! transport, the basic and bearer authentication, the error set naming registry, repository
//! and object, and the store access are already here, and one client for both directions
//! keeps one set of behaviours (loopback plain HTTP, redirects, timeouts) to test.

use std::collections::HashSet;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use oci_spec::image::{Descriptor, Digest};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;

use super::auth::Credentials;
use super::client::{RegistryClient, header_str};
use super::error::{Operation, RegistryError};
use super::pull::{PARALLEL_BLOBS, blocking};
use super::sources;
use super::upload::{BlobPush, push_blob};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{Image, Store};

/// Blobs up to this size go up in one request; larger ones in PATCHes of this size. Big enough
/// that per-request latency is noise, small enough that a chunk in memory per parallel upload
/// costs little.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 << 20;

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Speak plain HTTP to a registry that is not on loopback.
    pub plain_http: bool,
    pub credentials: Option<Credentials>,
    /// The monolithic-upload threshold and PATCH size, in bytes.
    pub chunk_size: u64,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            plain_http: false,
            credentials: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// What one blob's push took, for the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushedBlob {
    pub digest: String,
    /// `present`, `mounted` or `uploaded`.
    pub outcome: &'static str,
    /// The repository a mounted blob was linked from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounted_from: Option<String>,
    /// Requests an upload took (1: monolithic; more: chunked PATCHes).
    pub chunks: usize,
    pub bytes_uploaded: u64,
}

/// A pushed image and what the push had to send.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest digest, as the registry now serves it under the destination.
    pub digest: Digest,
    /// Config then layers, in manifest order.
    pub blobs: Vec<PushedBlob>,
}

impl Pushed {
    /// How many blobs had `outcome`.
    pub fn count(&self, outcome: &str) -> usize {
        self.blobs.iter().filter(|b| b.outcome == outcome).count()
    }
}

/// Pushes `image` from `store` to `destination` (its registry, repository and tag).
pub async fn push(
    store: &Store,
    image: &Image,
    destination: &Reference,
    options: &PushOptions,
    progress: &dyn Progress,
) -> Result<Pushed, RegistryError> {
    let client = RegistryClient::for_reference(
        destination,
        Operation::Push,
        options.plain_http,
        options.credentials.clone(),
    )?;
    let target = client.target().clone();
    // Keeps `prune` from deleting the blobs being read, should the image be removed meanwhile.
    let guard = blocking(&target, "the store's write lock", {
        let store = store.clone();
        move || store.write_guard()
    })
    .await?;

    let mut seen = HashSet::new();
    let blobs: Vec<&Descriptor> = std::iter::once(image.manifest.config())
        .chain(image.manifest.layers())
        .filter(|d| seen.insert(d.digest().clone()))
        .collect();
    // Made up front, as in pull, so that no closure in the stream keeps the future from Send.
    let pending: Vec<_> = blobs
        .iter()
        .map(|d| push_blob(&client, store, d, options.chunk_size, progress))
        .collect();
    // `buffered` keeps manifest order, so the summary lists config then layers.
    let outcomes: Vec<BlobPush> = stream::iter(pending)
        .buffered(PARALLEL_BLOBS)
        .try_collect()
        .await?;

    let digest = put_manifest(&client, store, image).await?;
    drop(guard);
    let endpoint = client.endpoint();
    sources::record_all(
        store.data_dir(),
        blobs.iter().map(|d| d.digest()),
        &endpoint.registry,
        &endpoint.repository,
    );
    let blobs: Vec<PushedBlob> = blobs
        .iter()
        .zip(outcomes)
        .map(|(descriptor, outcome)| summarize(descriptor, outcome))
        .collect();
    tracing::info!(%target, %digest, blobs = blobs.len(), "pushed");
    Ok(Pushed { digest, blobs })
}

/// PUTs the manifest's stored bytes (never re-serialized: the digest must stay the same) under
/// the destination's tag or digest, and checks the digest the registry reports for it.
async fn put_manifest(
    client: &RegistryClient,
    store: &Store,
    image: &Image,
) -> Result<Digest, RegistryError> {
    let digest = image.digest().clone();
    let object = format!("manifest {digest}");
    let bytes = blocking(client.target(), &object, {
        let store = store.clone();
        let digest = digest.clone();
        move || store.read_blob(&digest, "manifest")
    })
    .await?;
    let body = Bytes::from(bytes);
    let media_type = image.manifest_descriptor.media_type().to_string();
    let url = client.endpoint().manifest_url(&client.target().reference);
    let response = client
        .send(Method::PUT, &url, &object, |r| {
            r.header(CONTENT_TYPE, &media_type).body(body.clone())
        })
        .await?;
    if let Some(reported) = header_str(response.headers(), "docker-content-digest")
        && reported != digest.as_ref()
    {
        return Err(RegistryError::DigestMismatch {
            target: client.target().clone(),
            object,
            expected: digest.to_string(),
            actual: reported,
            expected_from: "the manifest berth sent",
        });
    }
    Ok(digest)
}

fn summarize(descriptor: &Descriptor, outcome: BlobPush) -> PushedBlob {
    let digest = descriptor.digest().to_string();
    match outcome {
        BlobPush::Present => PushedBlob {
            digest,
            outcome: "present",
            mounted_from: None,
            chunks: 0,
            bytes_uploaded: 0,
        },
        BlobPush::Mounted { from } => PushedBlob {
            digest,
            outcome: "mounted",
            mounted_from: Some(from),
            chunks: 0,
            bytes_uploaded: 0,
        },
        BlobPush::Uploaded { chunks, bytes } => PushedBlob {
            digest,
            outcome: "uploaded",
            mounted_from: None,
            chunks,
            bytes_uploaded: bytes,
        },
    }
}
