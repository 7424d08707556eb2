//! Crafted OCI layouts, oci-archives and docker-archives for the import tests.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::raw_tar::{Entry, tar};
use super::{gzip, sha256_hex};

/// A small tar holding one file `name` with `content`.
pub(crate) fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
    tar(&[Entry::file(name, content).mtime(1_700_000_000)])
}

/// A descriptor JSON value.
pub(crate) fn desc(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": format!("sha256:{}", sha256_hex(bytes)), "size": bytes.len()})
}

/// An OCI layout being written into a directory.
pub(crate) struct Layout {
    pub dir: PathBuf,
    pub entries: Vec<Value>,
}

/// One crafted image: its manifest bytes and the blobs it refers to.
pub(crate) struct Crafted {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    /// Uncompressed tars, for diff_ids.
    pub tars: Vec<Vec<u8>>,
}

impl Crafted {
    pub(crate) fn manifest_digest(&self) -> String {
        format!("sha256:{}", sha256_hex(&self.manifest))
    }
}

/// An image with gzip layers holding one file each, for `arch`.
pub(crate) fn craft_image(arch: &str, files: &[(&str, &[u8])]) -> Crafted {
    let tars: Vec<Vec<u8>> = files.iter().map(|(n, c)| layer_tar(n, c)).collect();
    let layers: Vec<Vec<u8>> = tars.iter().map(|t| gzip(t)).collect();
    let diff_ids: Vec<String> = tars
        .iter()
        .map(|t| format!("sha256:{}", sha256_hex(t)))
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>(),
    }))
    .unwrap();
    Crafted {
        manifest,
        config,
        layers,
        tars,
    }
}

impl Layout {
    pub(crate) fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        }
    }

    pub(crate) fn blob_path(&self, bytes: &[u8]) -> PathBuf {
        self.dir.join("blobs/sha256").join(sha256_hex(bytes))
    }

    pub(crate) fn put(&self, bytes: &[u8]) {
        fs::write(self.blob_path(bytes), bytes).unwrap();
    }

    pub(crate) fn put_image(&self, image: &Crafted) {
        self.put(&image.manifest);
        self.put(&image.config);
        for layer in &image.layers {
            self.put(layer);
        }
    }

    /// Adds an image and an index.json entry for it, named `ref_name` if given.
    pub(crate) fn add(&mut self, image: &Crafted, ref_name: Option<&str>) {
        self.put_image(image);
        let mut entry = desc(
            "application/vnd.oci.image.manifest.v1+json",
            &image.manifest,
        );
        if let Some(name) = ref_name {
            entry["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        }
        self.entries.push(entry);
    }

    /// Adds a nested index holding `images` as (image, arch) and names it.
    pub(crate) fn add_multi_platform(&mut self, images: &[(&Crafted, &str)], ref_name: &str) {
        let manifests: Vec<Value> = images
            .iter()
            .map(|(image, arch)| {
                self.put_image(image);
                let mut d = desc(
                    "application/vnd.oci.image.manifest.v1+json",
                    &image.manifest,
                );
                d["platform"] = json!({"architecture": arch, "os": "linux"});
                d
            })
            .collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        self.put(&index);
        let mut entry = desc("application/vnd.oci.image.index.v1+json", &index);
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": ref_name});
        self.entries.push(entry);
    }

    /// Writes index.json.
    pub(crate) fn finish(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.entries});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

/// Tars a directory's files (sorted, relative names) into `out`, like an oci-archive.
pub(crate) fn tar_dir(dir: &Path, out: &Path) {
    let mut files = Vec::new();
    collect(dir, dir, &mut files);
    files.sort();
    let entries: Vec<Entry> = files
        .iter()
        .map(|relative| Entry::file(relative, &fs::read(dir.join(relative)).unwrap()))
        .collect();
    fs::write(out, tar(&entries)).unwrap();
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

/// Writes a tar with the given members in order.
pub(crate) fn write_tar(out: &Path, members: &[(&str, &[u8])]) {
    let entries: Vec<Entry> = members
        .iter()
        .map(|(name, content)| Entry::file(name, content))
        .collect();
    fs::write(out, tar(&entries)).unwrap();
}
