//! A whole pull: resolve the reference to one platform's manifest, fetch the blobs the store
//! lacks (a few at a time), store the manifest and name the image.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use super::auth::Credentials;
use super::blob::{BlobFetch, fetch_blob};
use super::client::{Expected, FetchedManifest, RegistryClient};
use super::error::{Operation, RegistryError, Target};
use super::manifest::{CONFIG_MEDIA_TYPES, ManifestKind};
use super::sources;
use crate::digest::is_sha256;
use crate::platform::{Platform, describe_all};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{Image, Store, StoreError, descriptor};

/// Blobs downloaded at once: enough to hide per-request latency, few enough not to split a
/// thin link so much that every layer crawls.
pub(super) const PARALLEL_BLOBS: usize = 3;

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform to choose out of an index (linux/amd64 by default).
    pub platform: Platform,
    /// Speak plain HTTP to a registry that is not on loopback.
    pub plain_http: bool,
    pub credentials: Option<Credentials>,
}

/// A pulled image and what the pull had to download.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub image: Image,
    /// Config and layer blobs downloaded.
    pub blobs_downloaded: usize,
    /// Config and layer blobs the store already held.
    pub blobs_present: usize,
}

/// Pulls `reference` into `store` and names it `reference` (as written, e.g.
/// `127.0.0.1:5000/busybox:1`), pointing at the chosen platform's manifest.
pub async fn pull(
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled, RegistryError> {
    let client = pull_client(reference, options)?;
    let target = client.target().clone();

    let manifest = resolve_manifest(&client, reference, &options.platform).await?;
    let parsed: ImageManifest = parse_json(&target, &manifest, "image manifest")?;
    check_image_manifest(&target, &manifest, &parsed)?;

    let guard = blocking(&target, "the store's write lock", {
        let store = store.clone();
        move || store.write_guard()
    })
    .await?;
    let mut seen = HashSet::new();
    let blobs: Vec<&Descriptor> = std::iter::once(parsed.config())
        .chain(parsed.layers())
        .filter(|d| seen.insert(d.digest().clone()))
        .collect();
    // The futures are made up front, not by a closure inside the stream: a closure in the
    // future's state would keep it from being Send for callers on a multi-threaded runtime.
    let pending: Vec<_> = blobs
        .into_iter()
        .map(|d| fetch_blob(&client, store, d, progress))
        .collect();
    let fetches: Vec<BlobFetch> = stream::iter(pending)
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect()
        .await?;

    let manifest_descriptor = descriptor(
        MediaType::from(manifest.media_type.as_str()),
        manifest.digest.clone(),
        manifest.bytes.len() as u64,
    );
    let name = reference.to_string();
    let image = blocking(&target, &format!("manifest {}", manifest.digest), {
        let store = store.clone();
        let reference = reference.clone();
        move || {
            store.put_blob(manifest.bytes.as_slice(), Some(&manifest.digest))?;
            // Read back before naming it: the config must parse, or the name would point at
            // an image nothing can use.
            let image = store.load_image(name, manifest_descriptor.clone())?;
            store.tag(&reference, &manifest_descriptor)?;
            Ok(image)
        }
    })
    .await?;
    drop(guard);
    // Remembered so that a later push to another repository of this registry can mount them.
    sources::record_all(
        store.data_dir(),
        std::iter::once(image.manifest.config())
            .chain(image.manifest.layers())
            .map(|d| d.digest()),
        &target.registry,
        &target.repository,
    );
    let blobs_downloaded = fetches
        .iter()
        .filter(|f| **f == BlobFetch::Downloaded)
        .count();
    tracing::info!(image = %image.name, digest = %image.digest(), blobs_downloaded, "pulled");
    Ok(Pulled {
        image,
        blobs_downloaded,
        blobs_present: fetches.len() - blobs_downloaded,
    })
}

/// A client for pulling (or resolving) `reference` with `options`' transport and credentials.
pub(super) fn pull_client(
    reference: &Reference,
    options: &PullOptions,
) -> Result<RegistryClient, RegistryError> {
    RegistryClient::for_reference(
        reference,
        Operation::Pull,
        options.plain_http,
        options.credentials.clone(),
    )
}

/// The manifest or index the reference names, verified against the reference's digest when it
/// has one.
pub(super) async fn fetch_top(
    client: &RegistryClient,
    reference: &Reference,
) -> Result<FetchedManifest, RegistryError> {
    let asked = reference.manifest_reference();
    let expected = reference.digest.as_ref().map(|digest| Expected {
        digest,
        from: "the digest in the reference",
    });
    client
        .fetch_manifest(&asked, expected, &format!("manifest {asked}"))
        .await
}

/// Fetches what the reference names and, for an index, the manifest of `platform` in it.
async fn resolve_manifest(
    client: &RegistryClient,
    reference: &Reference,
    platform: &Platform,
) -> Result<FetchedManifest, RegistryError> {
    let target = client.target();
    let top_object = format!("manifest {}", reference.manifest_reference());
    let top = fetch_top(client, reference).await?;
    match ManifestKind::of(&top.media_type) {
        ManifestKind::Image => Ok(top),
        ManifestKind::Index => {
            let index_object = format!("index {}", top.digest);
            let index: ImageIndex = parse_json(target, &top, "image index")?;
            let chosen = platform.select(index.manifests()).ok_or_else(|| {
                RegistryError::NoMatchingPlatform {
                    target: target.clone(),
                    wanted: platform.to_string(),
                    available: describe_all(index.manifests()),
                }
            })?;
            tracing::debug!(%platform, digest = %chosen.digest(), "chose from {index_object}");
            let object = format!("manifest {} (for {platform})", chosen.digest());
            let manifest = client
                .fetch_manifest(
                    chosen.digest().as_ref(),
                    Some(Expected {
                        digest: chosen.digest(),
                        from: "the index",
                    }),
                    &object,
                )
                .await?;
            match ManifestKind::of(&manifest.media_type) {
                ManifestKind::Image => Ok(manifest),
                // An index inside an index is legal but no registry serves one for images.
                _ => Err(unsupported(
                    target,
                    &object,
                    &manifest.media_type,
                    "an image manifest",
                )),
            }
        }
        ManifestKind::Schema1 => Err(RegistryError::Schema1 {
            target: target.clone(),
            object: top_object,
            media_type: top.media_type,
        }),
        ManifestKind::Unknown => Err(unsupported(
            target,
            &top_object,
            &top.media_type,
            "an OCI or docker schema 2 image manifest or index",
        )),
    }
}

/// Refuses manifests that are not container images (artifacts, foreign digests).
fn check_image_manifest(
    target: &Arc<Target>,
    manifest: &FetchedManifest,
    parsed: &ImageManifest,
) -> Result<(), RegistryError> {
    let config = parsed.config();
    let config_type = config.media_type().to_string();
    if !CONFIG_MEDIA_TYPES.contains(&config_type.as_str()) {
        return Err(unsupported(
            target,
            &format!("the config of manifest {}", manifest.digest),
            &config_type,
            "an image config (this is not a container image)",
        ));
    }
    for blob in std::iter::once(config).chain(parsed.layers()) {
        if !is_sha256(blob.digest()) {
            return Err(RegistryError::UnsupportedDigest {
                target: target.clone(),
                object: format!("a blob of manifest {}", manifest.digest),
                digest: blob.digest().to_string(),
            });
        }
    }
    Ok(())
}

fn unsupported(
    target: &Arc<Target>,
    object: &str,
    media_type: &str,
    expected: &'static str,
) -> RegistryError {
    RegistryError::UnsupportedMediaType {
        target: target.clone(),
        object: object.to_string(),
        media_type: media_type.to_string(),
        expected,
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    target: &Arc<Target>,
    manifest: &FetchedManifest,
    kind: &'static str,
) -> Result<T, RegistryError> {
    serde_json::from_slice(&manifest.bytes).map_err(|source| RegistryError::InvalidJson {
        target: target.clone(),
        object: format!("manifest {}", manifest.digest),
        kind,
        source,
    })
}

/// Runs store work (file locks, fsyncs) off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    target: &Arc<Target>,
    object: &str,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RegistryError::Task {
            target: target.clone(),
            object: object.to_string(),
            reason: e.to_string(),
        })?
        .map_err(|source| RegistryError::Store {
            target: target.clone(),
            object: object.to_string(),
            source: Box::new(source),
        })
}
