//! Fixtures shared by the images crate's integration tests: a store in a temp dir and what
//! it holds on disk, digests and gzip of test bytes, and (in submodules) hand-written tar
//! layers and crafted OCI layouts and archives.

#![allow(dead_code)]

pub(crate) mod layout;
pub(crate) mod raw_tar;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_images::store::descriptor;
use berth_images::{Image, Reference, Store};
use oci_spec::image::{
    ConfigBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, RootFsBuilder,
};
use raw_tar::Layer;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// The lowercase hex sha256 of `bytes`, computed without the crate under test.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A store in `data/` of a temp dir, with room beside it for sources, unpack targets and
/// sentinels.
#[derive(Debug)]
pub(crate) struct Fixture {
    pub tmp: TempDir,
    pub store: Store,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("berth-images-test-")
            .tempdir()
            .unwrap();
        let store = Store::open(tmp.path().join("data")).unwrap();
        Self { tmp, store }
    }

    /// `name` in the temp dir, beside the store.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The store's data dir.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    /// Where the store keeps the blob with sha256 `hex`.
    pub(crate) fn stored_blob_path(&self, hex: &str) -> PathBuf {
        self.data_dir().join("images/blobs/sha256").join(hex)
    }

    /// How many blobs the store holds.
    pub(crate) fn blob_count(&self) -> usize {
        fs::read_dir(self.data_dir().join("images/blobs/sha256"))
            .unwrap()
            .count()
    }

    /// Every file left in the store's temp dir.
    pub(crate) fn temp_files(&self) -> Vec<PathBuf> {
        fs::read_dir(self.data_dir().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// The names the store lists, in its order.
    pub(crate) fn image_names(&self) -> Vec<String> {
        self.store
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect()
    }

    /// Stores the layers (blobs as given), a config claiming their diff_ids, a manifest, and
    /// tags it `name`.
    pub(crate) fn image(&self, name: &str, layers: &[Layer]) -> Image {
        let mut descriptors = Vec::new();
        for layer in layers {
            let digest = self.store.put_bytes(&layer.blob).unwrap();
            descriptors.push(descriptor(
                MediaType::Other(layer.media_type.to_string()),
                digest,
                layer.blob.len() as u64,
            ));
        }
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
            .build()
            .unwrap();
        let config = ImageConfigurationBuilder::default()
            .architecture("amd64")
            .os("linux")
            .rootfs(rootfs)
            .config(ConfigBuilder::default().build().unwrap())
            .build()
            .unwrap();
        let config = self
            .store
            .put_json(&config, MediaType::ImageConfig)
            .unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(descriptors)
            .build()
            .unwrap();
        let manifest = self
            .store
            .put_json(&manifest, MediaType::ImageManifest)
            .unwrap();
        let reference = Reference::parse(name).unwrap();
        self.store.tag(&reference, &manifest).unwrap();
        self.store.image(name).unwrap()
    }

    /// Names in the layers dir other than the (possibly empty) `sha256` directory, and the
    /// layer directories under it.
    pub(crate) fn layer_dirs(&self) -> Vec<String> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.store.layers_dir()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name != "sha256" {
                names.push(name);
            }
        }
        if let Ok(entries) = fs::read_dir(self.store.layers_dir().join("sha256")) {
            for entry in entries {
                names.push(format!(
                    "sha256/{}",
                    entry.unwrap().file_name().to_string_lossy()
                ));
            }
        }
        names
    }
}

/// Every path under `dir`, relative, sorted.
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
