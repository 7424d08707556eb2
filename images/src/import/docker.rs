//! docker-archive (`docker save`) import: manifest.json's Config/RepoTags/Layers, stored as an
//! OCI image (OCI media types; docker's config JSON is already OCI-compatible).

use std::io::{self, Read};
use std::path::Path;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageManifestBuilder, MediaType};
use serde::Deserialize;

use super::ImportOptions;
use super::archive::Streamed;
use super::error::{ImportError, Result, io_err, store_err};
use super::naming::{Unnamed, name_all};
use crate::digest::HashingWriter;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{Store, descriptor};

/// One image in a docker-archive's manifest.json.
#[derive(Debug, Deserialize)]
struct DockerImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// How a layer blob is compressed, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Builds and stores an OCI manifest for each selected image of the archive.
pub(crate) fn import_docker(
    store: &Store,
    path: &Path,
    manifest_json: &[u8],
    streamed: &Streamed,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<(Vec<Reference>, Descriptor)>> {
    let origin = format!("the archive {}", path.display());
    let images: Vec<DockerImage> =
        serde_json::from_slice(manifest_json).map_err(|source| ImportError::InvalidJson {
            what: format!("manifest.json in {}", path.display()),
            source,
        })?;
    let selected: Vec<DockerImage> = match &options.ref_name {
        Some(wanted) => {
            let available: Vec<String> = images
                .iter()
                .flat_map(|i| i.repo_tags.clone().unwrap_or_default())
                .collect();
            let chosen: Vec<DockerImage> = images
                .into_iter()
                .filter(|i| {
                    i.repo_tags
                        .as_ref()
                        .is_some_and(|tags| tags.contains(wanted))
                })
                .collect();
            if chosen.is_empty() {
                return Err(ImportError::RefNotFound {
                    origin,
                    wanted: wanted.clone(),
                    available: if available.is_empty() {
                        "none".into()
                    } else {
                        available.join(", ")
                    },
                });
            }
            chosen
        }
        None => images,
    };
    let mut unnamed = Vec::new();
    for image in selected {
        let tags = image.repo_tags.clone().unwrap_or_default();
        let label = match tags.first() {
            Some(tag) => format!("{tag:?} in {origin}"),
            None => format!("the image with config {} in {origin}", image.config),
        };
        let manifest = store_manifest(store, path, streamed, &image, &label, progress)?;
        unnamed.push(Unnamed {
            label,
            source_names: tags,
            item: manifest,
        });
    }
    name_all(unnamed, options.tag.as_ref(), &origin)
}

/// Checks one image's config and layers and stores its OCI manifest.
fn store_manifest(
    store: &Store,
    path: &Path,
    streamed: &Streamed,
    image: &DockerImage,
    label: &str,
    progress: &dyn Progress,
) -> Result<Descriptor> {
    let member = |name: &str, what: String| {
        streamed
            .lookup(name)
            .cloned()
            .ok_or_else(|| ImportError::MissingBlob {
                what,
                digest: format!("(member {name})"),
                origin: format!("the archive {}", path.display()),
            })
    };
    let config_what = format!("config {} of {label}", image.config);
    let (config_digest, config_size) = member(&image.config, config_what.clone())?;
    let config: ImageConfiguration = store
        .read_json(&config_digest, "image config")
        .map_err(store_err(&config_what))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != image.layers.len() {
        return Err(ImportError::Malformed {
            what: config_what,
            detail: format!(
                "it lists {} diff_ids but manifest.json lists {} layers",
                diff_ids.len(),
                image.layers.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (layer_path, expected_diff_id) in image.layers.iter().zip(diff_ids) {
        let what = format!("layer {layer_path} of {label}");
        let (digest, size) = member(layer_path, what.clone())?;
        progress.note(&format!("checking the diff_id of {what}"));
        let (compression, diff_id) = diff_id_of(store, &digest, &what)?;
        if diff_id.to_string() != *expected_diff_id {
            return Err(ImportError::DiffIdMismatch {
                what: label.to_string(),
                layer: layer_path.clone(),
                expected: expected_diff_id.clone(),
                actual: diff_id.to_string(),
            });
        }
        let media_type = match compression {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        };
        layers.push(descriptor(media_type, digest, size));
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            config_digest,
            config_size,
        ))
        .layers(layers)
        .build()
        .map_err(|e| ImportError::Malformed {
            what: label.to_string(),
            detail: format!("cannot build its OCI manifest: {e}"),
        })?;
    store
        .put_json(&manifest, MediaType::ImageManifest)
        .map_err(store_err(format!("storing the manifest of {label}")))
}

/// Detects a stored layer's compression and hashes its uncompressed tar (the diff_id).
fn diff_id_of(store: &Store, digest: &Digest, what: &str) -> Result<(Compression, Digest)> {
    let path = store.blob_path(digest);
    let mut file = store.open_blob(digest).map_err(store_err(what))?;
    let mut head = [0u8; 512];
    let mut filled = 0;
    while filled < head.len() {
        match file
            .read(&mut head[filled..])
            .map_err(io_err("read", &path))?
        {
            0 => break,
            n => filled += n,
        }
    }
    let compression = match head[..filled] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        // A tar header carries "ustar" at 257; an empty tar is all zero blocks.
        _ if filled == 512 && (&head[257..262] == b"ustar" || head.iter().all(|b| *b == 0)) => {
            Compression::None
        }
        _ => {
            return Err(ImportError::UnsupportedMediaType {
                what: what.to_string(),
                media_type: "unknown: neither a tar, nor gzip, nor zstd".into(),
            });
        }
    };
    if compression == Compression::None {
        return Ok((compression, digest.clone()));
    }
    let file = store.open_blob(digest).map_err(store_err(what))?;
    let mut hasher = HashingWriter::new(io::sink());
    let copied = match compression {
        Compression::Gzip => io::copy(
            &mut flate2::read::MultiGzDecoder::new(io::BufReader::new(file)),
            &mut hasher,
        ),
        _ => zstd::stream::read::Decoder::new(file).and_then(|mut d| io::copy(&mut d, &mut hasher)),
    };
    copied.map_err(|source| ImportError::Read {
        what: format!("{what} (decompressing)"),
        source,
    })?;
    let (_, diff_id, _) = hasher.finish();
    Ok((compression, diff_id))
}
