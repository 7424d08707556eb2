//! Pushing one blob: skipped when the registry has it, mounted from another repository of the
//! same registry when the store knows one that holds it, else uploaded: one PUT up to the chunk
//! size, PATCHes with `Content-Range` then a closing PUT above it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use oci_spec::image::{Descriptor, Digest};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};

use super::client::{RegistryClient, header_str};
use super::error::RegistryError;
use super::pull::blocking;
use super::sources;
use crate::progress::Progress;
use crate::store::{Store, StoreError, io_err};

const OCTET_STREAM: &str = "application/octet-stream";

/// What pushing a blob took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BlobPush {
    /// The registry had it already (HEAD answered 200).
    Present,
    /// The registry linked it from another of its repositories.
    Mounted { from: String },
    /// Sent in `chunks` requests (1: one monolithic PUT).
    Uploaded { chunks: usize, bytes: u64 },
}

/// Makes sure the registry's repository holds the blob `descriptor` names.
pub(super) async fn push_blob(
    client: &RegistryClient,
    store: &Store,
    descriptor: &Descriptor,
    chunk_size: u64,
    progress: &dyn Progress,
) -> Result<BlobPush, RegistryError> {
    let digest = descriptor.digest();
    let object = format!("blob {digest}");
    let item = digest.to_string();
    if exists(client, digest, &object).await? {
        progress.note(&format!("{item}: already present"));
        return Ok(BlobPush::Present);
    }
    let endpoint = client.endpoint();
    // A few bytes read from a small file: not worth a blocking thread.
    let source = sources::mount_source(
        store.data_dir(),
        digest,
        &endpoint.registry,
        &endpoint.repository,
    );
    let session = match &source {
        Some(from) => match start(client, Some((digest, from)), &object).await? {
            Started::Mounted => {
                progress.note(&format!("{item}: mounted from {from}"));
                return Ok(BlobPush::Mounted { from: from.clone() });
            }
            // The registry declined the mount (it no longer has the blob there, or may not
            // share it) and opened an ordinary upload instead, as the spec lets it.
            Started::Session(url) => url,
        },
        None => match start(client, None, &object).await? {
            Started::Session(url) => url,
            Started::Mounted => {
                return Err(protocol(
                    client,
                    &object,
                    "201 to a POST that asked no mount",
                ));
            }
        },
    };
    progress.started(&item, Some(descriptor.size()));
    let uploaded = if descriptor.size() <= chunk_size {
        monolithic(client, store, digest, session, &object, progress).await?
    } else {
        chunked(
            client, store, digest, session, chunk_size, &object, progress,
        )
        .await?
    };
    progress.finished(&item);
    tracing::debug!(%digest, ?uploaded, "blob pushed");
    Ok(uploaded)
}

/// HEAD: whether the repository has the blob.
async fn exists(
    client: &RegistryClient,
    digest: &Digest,
    object: &str,
) -> Result<bool, RegistryError> {
    let url = client.endpoint().blob_url(digest.as_ref());
    match client.send(Method::HEAD, &url, object, |r| r).await {
        Ok(_) => Ok(true),
        Err(RegistryError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// How a POST to the uploads endpoint was answered.
enum Started {
    Mounted,
    Session(Url),
}

async fn start(
    client: &RegistryClient,
    mount: Option<(&Digest, &str)>,
    object: &str,
) -> Result<Started, RegistryError> {
    let endpoint = client.endpoint();
    let url = endpoint.upload_url(mount.map(|(digest, from)| (digest.as_ref(), from)));
    let response = client
        .send(Method::POST, &url, object, |r| r.body(Bytes::new()))
        .await?;
    match response.status() {
        StatusCode::CREATED if mount.is_some() => Ok(Started::Mounted),
        StatusCode::ACCEPTED => Ok(Started::Session(next_location(client, &response, object)?)),
        other => Err(protocol(
            client,
            object,
            &format!(
                "HTTP {} to the upload POST (expected 201 or 202)",
                other.as_u16()
            ),
        )),
    }
}

/// The upload session's URL from a response's `Location`.
fn next_location(
    client: &RegistryClient,
    response: &Response,
    object: &str,
) -> Result<Url, RegistryError> {
    let location = header_str(response.headers(), LOCATION.as_str())
        .ok_or_else(|| protocol(client, object, "an upload answer without a Location header"))?;
    client
        .endpoint()
        .resolve_location(&location)
        .map_err(|reason| protocol(client, object, &reason))
}

/// The whole blob in the closing PUT.
async fn monolithic(
    client: &RegistryClient,
    store: &Store,
    digest: &Digest,
    session: Url,
    object: &str,
    progress: &dyn Progress,
) -> Result<BlobPush, RegistryError> {
    let path = store.blob_path(digest);
    let body: Bytes = blocking(client.target(), object, move || {
        let bytes = std::fs::read(&path).map_err(io_err("read blob", &path))?;
        Ok(Bytes::from(bytes))
    })
    .await?;
    let bytes = body.len() as u64;
    finish(client, digest, session, body, object).await?;
    progress.advanced(digest.as_ref(), bytes);
    Ok(BlobPush::Uploaded { chunks: 1, bytes })
}

/// PATCHes of `chunk_size` bytes, each naming its range, then an empty closing PUT.
async fn chunked(
    client: &RegistryClient,
    store: &Store,
    digest: &Digest,
    mut session: Url,
    chunk_size: u64,
    object: &str,
    progress: &dyn Progress,
) -> Result<BlobPush, RegistryError> {
    let item = digest.to_string();
    let path = store.blob_path(digest);
    let mut file = Some({
        let store = store.clone();
        let digest = digest.clone();
        blocking(client.target(), object, move || store.open_blob(&digest)).await?
    });
    let mut offset: u64 = 0;
    let mut chunks = 0;
    loop {
        let taken = file.take().expect("the file is put back after every read");
        let path = path.clone();
        let (back, chunk) = blocking(client.target(), object, move || {
            read_chunk(taken, chunk_size, &path)
        })
        .await?;
        file = Some(back);
        if chunk.is_empty() {
            break;
        }
        let length = chunk.len() as u64;
        let range = format!("{offset}-{}", offset + length - 1);
        let response = client
            .send(Method::PATCH, session.as_str(), object, |r| {
                r.header(CONTENT_TYPE, OCTET_STREAM)
                    .header("content-range", &range)
                    .body(chunk.clone())
            })
            .await?;
        session = next_location(client, &response, object)?;
        offset += length;
        chunks += 1;
        progress.advanced(&item, length);
    }
    finish(client, digest, session, Bytes::new(), object).await?;
    Ok(BlobPush::Uploaded {
        chunks,
        bytes: offset,
    })
}

/// Up to `size` bytes from where the file stands; empty at its end.
fn read_chunk(file: File, size: u64, path: &Path) -> Result<(File, Bytes), StoreError> {
    let mut buffer = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    (&file)
        .take(size)
        .read_to_end(&mut buffer)
        .map_err(io_err("read blob", path))?;
    Ok((file, Bytes::from(buffer)))
}

/// The closing PUT `?digest=`, with the last (or only) bytes; the registry checks the digest.
async fn finish(
    client: &RegistryClient,
    digest: &Digest,
    mut session: Url,
    body: Bytes,
    object: &str,
) -> Result<(), RegistryError> {
    session
        .query_pairs_mut()
        .append_pair("digest", digest.as_ref());
    client
        .send(Method::PUT, session.as_str(), object, |r| {
            r.header(CONTENT_TYPE, OCTET_STREAM).body(body.clone())
        })
        .await?;
    Ok(())
}

fn protocol(client: &RegistryClient, object: &str, reason: &str) -> RegistryError {
    RegistryError::Protocol {
        target: client.target().clone(),
        object: object.to_string(),
        reason: reason.to_string(),
    }
}
