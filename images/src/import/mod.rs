//! Bringing images into the store from an OCI image layout directory, an oci-archive or a
//! docker-archive, detected from the path.
//!
//! Every blob is verified against its digest (and its descriptor's size) as it is written, and
//! names are added only once every blob of every selected image is in. A failed import tags
//! nothing and leaves no partial blob; whole, verified blobs it had already written may stay
//! as unreferenced blobs until `berth image prune` removes them.

mod archive;
mod blobs;
mod docker;
mod error;
mod index;
mod media;
mod naming;

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use oci_spec::image::Descriptor;

pub use crate::platform::{Platform, PlatformError};
pub use error::ImportError;

use blobs::{AlreadyStored, BlobSource, LayoutDir, is_layout_dir};
use error::{Result, io_err, store_err};
use naming::{Unnamed, name_all};

use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{Image, MAX_JSON_BLOB, Store};

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Names the imported image (only one image may be selected).
    pub tag: Option<Reference>,
    /// Selects the manifest whose `org.opencontainers.image.ref.name` (or, in a docker-archive,
    /// RepoTag) is this; by default every named one is imported.
    pub ref_name: Option<String>,
    /// The platform taken from multi-platform indexes.
    pub platform: Platform,
}

/// Imports the image(s) at `path` and returns them as named in the store.
pub fn import(
    store: &Store,
    path: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<Image>> {
    // Held until every name is added, so that prune cannot delete blobs in between.
    let _guard = store
        .write_guard()
        .map_err(store_err("locking the image store for writing"))?;
    let meta = fs::metadata(path).map_err(io_err("open", path))?;
    let named: Vec<(Vec<Reference>, Descriptor)> = if meta.is_dir() {
        if !is_layout_dir(path) {
            return Err(ImportError::UnknownFormat { path: path.into() });
        }
        import_layout(store, path, options, progress)?
    } else if archive::looks_like_tar(path)? {
        import_archive(store, path, options, progress)?
    } else {
        return Err(ImportError::UnknownFormat { path: path.into() });
    };
    let mut images = Vec::new();
    for (references, manifest) in named {
        for reference in &references {
            store
                .tag(reference, &manifest)
                .map_err(store_err(format!("naming {reference}")))?;
        }
        let name = references[0].to_string();
        let image = store
            .load_image(name.clone(), manifest)
            .map_err(store_err(format!("reading back {name}")))?;
        images.push(image);
    }
    Ok(images)
}

/// Imports from an OCI image layout directory.
fn import_layout(
    store: &Store,
    dir: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<(Vec<Reference>, Descriptor)>> {
    let index_path = dir.join("index.json");
    let bytes = read_small(&index_path)?;
    let source = LayoutDir {
        dir: dir.to_path_buf(),
    };
    import_index(
        store,
        &bytes,
        &index_path.display().to_string(),
        &source,
        options,
        progress,
    )
}

/// Imports from an oci-archive or docker-archive: docker when it has a manifest.json, OCI
/// when it has index.json.
fn import_archive(
    store: &Store,
    path: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<(Vec<Reference>, Descriptor)>> {
    let streamed = archive::stream_into_store(store, path, progress)?;
    let origin = format!("the archive {}", path.display());
    if let Some(manifest_json) = streamed.small.get("manifest.json") {
        let images =
            docker::import_docker(store, path, manifest_json, &streamed, options, progress)?;
        return Ok(images);
    }
    let Some(index_json) = streamed.small.get("index.json") else {
        return Err(ImportError::Malformed {
            what: origin,
            detail: "it has neither index.json (oci-archive) nor manifest.json (docker-archive)"
                .into(),
        });
    };
    let source = AlreadyStored {
        archive: path.to_path_buf(),
    };
    import_index(
        store,
        index_json,
        &format!("index.json in {}", path.display()),
        &source,
        options,
        progress,
    )
}

/// Imports the images of an OCI index (`index_json`, named `what` in errors) whose blobs
/// `source` holds, and names them by `--tag` or their ref.name.
fn import_index(
    store: &Store,
    index_json: &[u8],
    what: &str,
    source: &dyn BlobSource,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<(Vec<Reference>, Descriptor)>> {
    let index = index::parse_index(index_json, what)?;
    let fetched = index::fetch_index(
        store,
        &index,
        source,
        options.ref_name.as_deref(),
        &options.platform,
        progress,
    )?;
    let unnamed = fetched
        .into_iter()
        .map(|f| Unnamed {
            label: match &f.ref_name {
                Some(name) => format!("{name:?} ({})", f.manifest.digest()),
                None => f.manifest.digest().to_string(),
            },
            source_names: f.ref_name.into_iter().collect(),
            item: f.manifest,
        })
        .collect();
    name_all(unnamed, options.tag.as_ref(), &source.origin())
}

/// Reads a JSON file that must be small (index.json, manifest.json).
fn read_small(path: &Path) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BLOB + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    if bytes.len() as u64 > MAX_JSON_BLOB {
        return Err(ImportError::Malformed {
            what: path.display().to_string(),
            detail: format!("larger than the {MAX_JSON_BLOB} bytes allowed for a JSON document"),
        });
    }
    Ok(bytes)
}
