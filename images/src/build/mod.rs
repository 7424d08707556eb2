//! `berth image build`: one new layer made from a directory (a deterministic gzip tar), on top
//! of a base image or nothing, with the config settings given; stored as an OCI image.

pub(crate) mod config;
mod error;
pub(crate) mod tarball;
pub(crate) mod walk;

use std::path::PathBuf;
use std::time::SystemTime;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifestBuilder, MediaType};

pub use error::BuildError;

use error::{Result, store_err};
use walk::LayerEntry;

use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{Image, Store, descriptor};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The directory whose contents become the new layer (the directory itself is not an
    /// entry; owners, modes, mtimes and xattrs come from the files).
    pub from_dir: PathBuf,
    /// The image to build on (its layers and config); `None` starts from an empty linux/amd64
    /// image.
    pub base: Option<String>,
    pub tag: Reference,
    /// Replaces the base's cmd when given.
    pub cmd: Option<Vec<String>>,
    /// Replaces the base's entrypoint when given (and clears the base's cmd unless `cmd` is
    /// given too, as docker does).
    pub entrypoint: Option<Vec<String>>,
    /// Merged into the base's env by key.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// Merged into the base's labels.
    pub labels: Vec<(String, String)>,
    /// Added to the base's exposed ports (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// Paths (relative to the image root) that the layer deletes from lower layers, as
    /// `.wh.NAME` entries; a path ending in `/` makes that directory opaque (`.wh..wh..opq`).
    pub whiteouts: Vec<String>,
    /// The image's `created` time and its history entry's.
    pub created: SystemTime,
    /// The history entry's `created_by`.
    pub created_by: String,
}

impl BuildOptions {
    /// Options with everything but the source and name left to the base (or empty).
    pub fn new(from_dir: impl Into<PathBuf>, tag: Reference) -> Self {
        let from_dir = from_dir.into();
        Self {
            created_by: format!("berth image build --from-dir {}", from_dir.display()),
            from_dir,
            base: None,
            tag,
            cmd: None,
            entrypoint: None,
            env: Vec::new(),
            workdir: None,
            user: None,
            labels: Vec::new(),
            exposed_ports: Vec::new(),
            whiteouts: Vec::new(),
            created: SystemTime::now(),
        }
    }
}

/// Builds the image and names it `options.tag`.
pub fn build(store: &Store, options: &BuildOptions, progress: &dyn Progress) -> Result<Image> {
    if !options.from_dir.is_dir() {
        return Err(BuildError::InvalidOption {
            option: format!("--from-dir {}", options.from_dir.display()),
            reason: "not a directory".into(),
        });
    }
    if options.tag.digest.is_some() {
        return Err(BuildError::InvalidOption {
            option: format!("--tag {}", options.tag),
            reason: "an image is named NAME:TAG; a digest cannot be part of its name".into(),
        });
    }
    config::validate(options)?;
    let whiteouts = options
        .whiteouts
        .iter()
        .map(|path| whiteout_entry(path))
        .collect::<Result<Vec<_>>>()?;
    // Held until the tag is written, so that prune cannot take the new blobs in between.
    let _guard = store
        .write_guard()
        .map_err(store_err("locking the image store for writing"))?;
    let (mut config, mut layers): (ImageConfiguration, Vec<Descriptor>) = match &options.base {
        Some(base) => {
            let image = store.image(base).map_err(|source| BuildError::Base {
                base: base.clone(),
                source,
            })?;
            (image.config, image.manifest.layers().clone())
        }
        None => (config::empty_config(), Vec::new()),
    };
    let entries = walk::list_tree(&options.from_dir, whiteouts)?;
    let layer = tarball::write_layer(store, &entries, progress)?;
    let created = humantime::format_rfc3339_seconds(options.created).to_string();
    config::apply(&mut config, options, layer.diff_id.as_ref(), &created);
    layers.push(descriptor(
        MediaType::ImageLayerGzip,
        layer.digest.clone(),
        layer.size,
    ));
    let manifest_descriptor =
        put_image(store, &config, layers).map_err(store_err("storing the image"))?;
    store
        .tag(&options.tag, &manifest_descriptor)
        .map_err(store_err(format!("naming the image {}", options.tag)))?;
    store
        .load_image(options.tag.to_string(), manifest_descriptor)
        .map_err(store_err(format!("reading back {}", options.tag)))
}

/// Stores `config` and a manifest of it with `layers`; returns the manifest's descriptor.
pub(crate) fn put_image(
    store: &Store,
    config: &ImageConfiguration,
    layers: Vec<Descriptor>,
) -> std::result::Result<Descriptor, crate::store::StoreError> {
    let config_descriptor = store.put_json(&canonical(config), MediaType::ImageConfig)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor)
        .layers(layers)
        .build()
        .expect("schema version, config and layers are all a manifest needs");
    store.put_json(&manifest, MediaType::ImageManifest)
}

/// The config as a JSON value: serde_json's maps are sorted, while oci-spec serializes labels
/// and ports from a HashMap in random order; sorted keys give the same config the same digest.
fn canonical(config: &ImageConfiguration) -> serde_json::Value {
    serde_json::to_value(config).expect("an image config always serializes")
}

/// The `.wh.` entry that deletes `path` (or makes it opaque, for `dir/`).
fn whiteout_entry(path: &str) -> Result<LayerEntry> {
    let invalid = |reason: &str| BuildError::InvalidOption {
        option: format!("--whiteout {path}"),
        reason: reason.into(),
    };
    let opaque = path.ends_with('/');
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    let parts: Vec<&str> = trimmed.split('/').collect();
    if trimmed.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(invalid(
            "give a path inside the image such as /etc/motd (or dir/ to make a directory opaque)",
        ));
    }
    if parts.iter().any(|p| p.starts_with(".wh.")) {
        return Err(invalid("give the path to delete, not a .wh. marker"));
    }
    let marker = if opaque {
        format!("{trimmed}/.wh..wh..opq")
    } else {
        match trimmed.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.wh.{name}"),
            None => format!(".wh.{trimmed}"),
        }
    };
    Ok(LayerEntry::whiteout(marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_markers_sit_beside_their_targets() {
        assert_eq!(whiteout_entry("/etc/motd").unwrap().path, "etc/.wh.motd");
        assert_eq!(whiteout_entry("top").unwrap().path, ".wh.top");
        assert_eq!(
            whiteout_entry("/var/cache/").unwrap().path,
            "var/cache/.wh..wh..opq"
        );
        assert!(whiteout_entry("/").is_err());
        assert!(whiteout_entry("a/../b").is_err());
    }
}
