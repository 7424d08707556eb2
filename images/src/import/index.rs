//! Importing what an OCI index.json names: choosing manifests by ref name, descending through
//! nested indexes to the wanted platform, and fetching every blob an image needs.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::blobs::BlobSource;
use super::error::{ImportError, Result, store_err};
use super::media::{Kind, classify};
use crate::platform::{Platform, describe_all};
use crate::progress::Progress;
use crate::store::{Store, ref_name};

/// Indexes nested deeper than this are refused (real ones nest one level, if at all).
const MAX_INDEX_DEPTH: usize = 4;

/// A manifest chosen for import, its blobs all in the store.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    /// The ref.name annotation it was chosen by, if any.
    pub ref_name: Option<String>,
    /// The platform-specific image manifest.
    pub manifest: Descriptor,
}

/// Parses index.json bytes; `what` names the file in errors.
pub(crate) fn parse_index(bytes: &[u8], what: &str) -> Result<ImageIndex> {
    serde_json::from_slice(bytes).map_err(|source| ImportError::InvalidJson {
        what: what.to_string(),
        source,
    })
}

/// Chooses the top-level entries to import: the one named `wanted` if given, else every named
/// one, else (an index with no names at all) every entry.
fn select<'a>(
    index: &'a ImageIndex,
    wanted: Option<&str>,
    origin: &str,
) -> Result<Vec<&'a Descriptor>> {
    let entries = index.manifests();
    if let Some(wanted) = wanted {
        let chosen: Vec<&Descriptor> = entries
            .iter()
            .filter(|d| ref_name(d) == Some(wanted))
            .collect();
        if chosen.is_empty() {
            let names: Vec<&str> = entries.iter().filter_map(ref_name).collect();
            return Err(ImportError::RefNotFound {
                origin: origin.to_string(),
                wanted: wanted.to_string(),
                available: if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
            });
        }
        return Ok(chosen);
    }
    let named: Vec<&Descriptor> = entries.iter().filter(|d| ref_name(d).is_some()).collect();
    let chosen = if named.is_empty() {
        entries.iter().collect()
    } else {
        named
    };
    if chosen.is_empty() {
        return Err(ImportError::NothingToImport {
            origin: origin.to_string(),
        });
    }
    Ok(chosen)
}

/// Fetches everything the chosen entries of `index` need into the store.
pub(crate) fn fetch_index(
    store: &Store,
    index: &ImageIndex,
    source: &dyn BlobSource,
    ref_wanted: Option<&str>,
    platform: &Platform,
    progress: &dyn Progress,
) -> Result<Vec<Fetched>> {
    let origin = source.origin();
    let mut fetched = Vec::new();
    for entry in select(index, ref_wanted, &origin)? {
        let name = ref_name(entry).map(str::to_string);
        let label = match &name {
            Some(name) => format!("image {name:?} in {origin}"),
            None => format!("image {} in {origin}", entry.digest()),
        };
        let manifest = resolve(store, entry, source, platform, &label, 0, progress)?;
        fetched.push(Fetched {
            ref_name: name,
            manifest,
        });
    }
    Ok(fetched)
}

/// Follows `descriptor` down to one image manifest, fetching it and its config and layers.
fn resolve(
    store: &Store,
    descriptor: &Descriptor,
    source: &dyn BlobSource,
    platform: &Platform,
    label: &str,
    depth: usize,
    progress: &dyn Progress,
) -> Result<Descriptor> {
    match classify(descriptor.media_type()) {
        Some(Kind::Manifest) => {
            fetch_manifest(store, descriptor, source, label, progress)?;
            Ok(descriptor.clone())
        }
        Some(Kind::Index) => {
            let what = format!("image index {} of {label}", descriptor.digest());
            if depth >= MAX_INDEX_DEPTH {
                return Err(ImportError::TooDeep {
                    what,
                    limit: MAX_INDEX_DEPTH,
                });
            }
            source.ensure(store, descriptor, &what, progress)?;
            let nested: ImageIndex = store
                .read_json(descriptor.digest(), "image index")
                .map_err(store_err(&what))?;
            let entry = pick_platform(&nested, platform, &what)?;
            resolve(store, entry, source, platform, label, depth + 1, progress)
        }
        _ => Err(ImportError::UnsupportedMediaType {
            what: format!("the manifest {} of {label}", descriptor.digest()),
            media_type: descriptor.media_type().to_string(),
        }),
    }
}

/// The entry of a multi-platform index for `platform`.
fn pick_platform<'a>(
    index: &'a ImageIndex,
    platform: &Platform,
    what: &str,
) -> Result<&'a Descriptor> {
    platform
        .select(index.manifests())
        .ok_or_else(|| ImportError::NoMatchingPlatform {
            what: what.to_string(),
            wanted: platform.to_string(),
            available: describe_all(index.manifests()),
        })
}

/// Fetches and checks an image manifest, its config and its layers.
fn fetch_manifest(
    store: &Store,
    descriptor: &Descriptor,
    source: &dyn BlobSource,
    label: &str,
    progress: &dyn Progress,
) -> Result<()> {
    let what = format!("manifest {} of {label}", descriptor.digest());
    source.ensure(store, descriptor, &what, progress)?;
    let manifest: ImageManifest = store
        .read_json(descriptor.digest(), "manifest")
        .map_err(store_err(&what))?;
    if let Some(media_type) = manifest.media_type()
        && classify(media_type) != Some(Kind::Manifest)
    {
        return Err(ImportError::UnsupportedMediaType {
            what,
            media_type: media_type.to_string(),
        });
    }
    let config = manifest.config();
    let config_what = format!("config {} of {label}", config.digest());
    if classify(config.media_type()) != Some(Kind::Config) {
        return Err(ImportError::UnsupportedMediaType {
            what: config_what,
            media_type: config.media_type().to_string(),
        });
    }
    // Check every layer's media type before copying anything big.
    for layer in manifest.layers() {
        if classify(layer.media_type()) != Some(Kind::Layer) {
            return Err(ImportError::UnsupportedMediaType {
                what: format!("layer {} of {label}", layer.digest()),
                media_type: layer.media_type().to_string(),
            });
        }
    }
    source.ensure(store, config, &config_what, progress)?;
    let parsed: ImageConfiguration = store
        .read_json(config.digest(), "image config")
        .map_err(store_err(&config_what))?;
    let diff_ids = parsed.rootfs().diff_ids().len();
    if diff_ids != manifest.layers().len() {
        return Err(ImportError::Malformed {
            what: config_what,
            detail: format!(
                "it lists {diff_ids} diff_ids but the manifest has {} layers",
                manifest.layers().len()
            ),
        });
    }
    for layer in manifest.layers() {
        source.ensure(
            store,
            layer,
            &format!("layer {} of {label}", layer.digest()),
            progress,
        )?;
    }
    Ok(())
}
