//! Reading and altering OCI image layouts on disk: their index.json, manifests and blobs.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The annotation naming an index entry.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A JSON file, parsed.
pub fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Where the layout keeps the blob `sha256:HEX`.
pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Stores `bytes` as a blob of the layout; returns a descriptor for it.
pub fn put_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let hex = sha256_hex(bytes);
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).expect("write blob");
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

/// An image index over `manifests`.
pub fn image_index(manifests: Vec<Value>) -> Value {
    json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
}

/// The layout's index.json.
pub fn read_index(layout: &Path) -> Value {
    read_json(&layout.join("index.json"))
}

/// Replaces the layout's index.json with an index over `entries`.
pub fn set_index(layout: &Path, entries: Vec<Value>) {
    write_index(layout, &image_index(entries));
}

fn write_index(layout: &Path, index: &Value) {
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(index).expect("serialize index"),
    )
    .expect("write index.json");
}

/// Adds `entry` to the layout's index.json, after the entries there.
pub fn push_index_entry(layout: &Path, entry: Value) {
    let mut index = read_index(layout);
    index["manifests"]
        .as_array_mut()
        .expect("index.json has manifests")
        .push(entry);
    write_index(layout, &index);
}

/// `descriptor` named `name` by the ref.name annotation.
pub fn with_ref_name(mut descriptor: Value, name: &str) -> Value {
    descriptor["annotations"] = json!({ REF_NAME: name });
    descriptor
}

/// The index entry named `name`.
pub fn named_entry(layout: &Path, name: &str) -> Value {
    read_index(layout)["manifests"]
        .as_array()
        .expect("index.json has manifests")
        .iter()
        .find(|d| d["annotations"][REF_NAME] == name)
        .unwrap_or_else(|| panic!("no {name} in the layout {}", layout.display()))
        .clone()
}

/// The layout's first index entry and the manifest it points at.
pub fn first_manifest(layout: &Path) -> (Value, Value) {
    let entry = read_index(layout)["manifests"][0].clone();
    let manifest = read_json(&blob_path(
        layout,
        entry["digest"].as_str().expect("a digest"),
    ));
    (entry, manifest)
}
