//! The store's promises: verified atomic blob writes, a locked index that concurrent writers
//! never corrupt, name resolution, and prune removing exactly what nothing refers to.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::thread;

use berth_images::digest::sha256_of;
use berth_images::store::{StoreError, descriptor};
use berth_images::{Reference, Store};
use oci_spec::image::{
    ConfigBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, RootFsBuilder,
};

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Stores a one-layer image whose layer is `layer` (any bytes; not unpacked here) and tags it.
fn store_image(store: &Store, name: &str, layer: &[u8]) -> oci_spec::image::Descriptor {
    let layer_digest = store.put_bytes(layer).unwrap();
    let config = ImageConfigurationBuilder::default()
        .architecture("amd64")
        .os("linux")
        .config(ConfigBuilder::default().build().unwrap())
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer_digest.to_string()])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let config_desc = store.put_json(&config, MediaType::ImageConfig).unwrap();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(vec![descriptor(
            MediaType::ImageLayer,
            layer_digest,
            layer.len() as u64,
        )])
        .build()
        .unwrap();
    let manifest_desc = store.put_json(&manifest, MediaType::ImageManifest).unwrap();
    store
        .tag(&Reference::parse(name).unwrap(), &manifest_desc)
        .unwrap();
    manifest_desc
}

#[test]
fn a_fresh_store_is_an_oci_layout() {
    let (dir, _store) = temp_store();
    let layout = fs::read_to_string(dir.path().join("images/oci-layout")).unwrap();
    assert!(layout.contains("imageLayoutVersion"));
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("images/index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 0);
}

#[test]
fn a_blob_that_does_not_match_its_digest_leaves_nothing() {
    let (dir, store) = temp_store();
    let claimed = sha256_of(b"what the manifest promised");
    let err = store
        .put_blob(&b"something else"[..], Some(&claimed))
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&claimed.to_string()));
    assert!(!store.has_blob(&claimed));
    assert!(entries(&dir.path().join("images/blobs/sha256")).is_empty());
    assert!(
        entries(&dir.path().join("tmp")).is_empty(),
        "temp file left behind"
    );
}

#[test]
fn an_abandoned_blob_writer_leaves_no_temp_file() {
    let (dir, store) = temp_store();
    let mut writer = store.blob_writer(None).unwrap();
    writer.write_all(b"half a blob").unwrap();
    assert_eq!(entries(&dir.path().join("tmp")).len(), 1);
    drop(writer);
    assert!(entries(&dir.path().join("tmp")).is_empty());
}

#[test]
fn blobs_are_content_addressed_and_verified_on_read() {
    let (_dir, store) = temp_store();
    let digest = store.put_bytes(b"{\"a\":1}").unwrap();
    assert_eq!(digest, sha256_of(b"{\"a\":1}"));
    assert_eq!(store.put_bytes(b"{\"a\":1}").unwrap(), digest);
    // Corrupt it behind the store's back: reading it must notice.
    fs::write(store.blob_path(&digest), b"{\"a\":2}").unwrap();
    let err = store.read_blob(&digest, "config").unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
}

#[test]
fn concurrent_writers_never_lose_a_name() {
    let (dir, _store) = temp_store();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let path = dir.path().to_path_buf();
            thread::spawn(move || {
                // Each writer opens its own handle, as separate processes would.
                let store = Store::open(&path).unwrap();
                for i in 0..15 {
                    store_image(
                        &store,
                        &format!("app{t}:v{i}"),
                        format!("layer {t} {i}").as_bytes(),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let names: BTreeSet<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names.len(), 90);
    for t in 0..6 {
        for i in 0..15 {
            let name = format!("app{t}:v{i}");
            assert!(names.contains(&name), "{name} lost");
            store.image(&name).unwrap();
        }
    }
}

#[test]
fn names_resolve_by_reference_and_digest_prefix() {
    let (_dir, store) = temp_store();
    let desc = store_image(&store, "busybox", b"layer");
    assert_eq!(store.image("busybox").unwrap().name, "busybox:latest");
    assert_eq!(
        store.image("busybox:latest").unwrap().digest(),
        desc.digest()
    );
    let hex = desc.digest().digest();
    assert_eq!(store.image(&hex[..12]).unwrap().name, "busybox:latest");
    assert_eq!(
        store.image(&format!("sha256:{hex}")).unwrap().name,
        "busybox:latest"
    );
    store_image(&store, "docker.io/library/alpine:3", b"other");
    assert_eq!(
        store.image("alpine:3").unwrap().name,
        "docker.io/library/alpine:3"
    );
    let err = store.image("nothere:v1").unwrap_err();
    assert!(matches!(err, StoreError::ImageNotFound(_)), "{err}");
    let err = store.image("Not/A//Ref").unwrap_err();
    assert!(err.to_string().contains("invalid image reference"), "{err}");
}

#[test]
fn retagging_replaces_and_untag_removes_only_the_name() {
    let (_dir, store) = temp_store();
    let first = store_image(&store, "app:v1", b"one");
    let second = store_image(&store, "app:v1", b"two");
    assert_ne!(first.digest(), second.digest());
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].descriptor.digest(), second.digest());
    let removed = store.untag("app:v1").unwrap();
    assert_eq!(removed.digest(), second.digest());
    assert!(store.list().unwrap().is_empty());
    assert!(
        store.has_blob(second.digest()),
        "untag must not delete blobs"
    );
    assert!(matches!(
        store.untag("app:v1"),
        Err(StoreError::ImageNotFound(_))
    ));
}

#[test]
fn prune_removes_exactly_the_unreferenced_blobs_and_layers() {
    let (dir, store) = temp_store();
    let kept = store_image(&store, "keep:v1", b"kept layer");
    let dropped = store_image(&store, "drop:v1", b"dropped layer");
    let kept_image = store.image("keep:v1").unwrap();
    let dropped_image = store.image("drop:v1").unwrap();
    // Unpacked layer dirs named by diff_id: one live, one orphaned, one orphaned but in use.
    let layers = dir.path().join("layers/sha256");
    let live_layer = kept_image.config.rootfs().diff_ids()[0]
        .trim_start_matches("sha256:")
        .to_string();
    fs::create_dir_all(layers.join(&live_layer)).unwrap();
    fs::create_dir_all(layers.join("f".repeat(64))).unwrap();
    fs::create_dir_all(layers.join("e".repeat(64))).unwrap();
    // A crashed extraction's leftovers.
    fs::create_dir_all(dir.path().join("layers/.tmp-abc/etc")).unwrap();
    store.untag("drop:v1").unwrap();

    let in_use = BTreeSet::from(["e".repeat(64)]);
    let report = store.prune(|| Ok::<_, StoreError>(in_use.clone())).unwrap();
    let removed: BTreeSet<String> = report.blobs_removed.iter().cloned().collect();
    let expected: BTreeSet<String> = [
        dropped.digest().to_string(),
        dropped_image.manifest.config().digest().to_string(),
        dropped_image.manifest.layers()[0].digest().to_string(),
    ]
    .into();
    assert_eq!(removed, expected);
    assert_eq!(
        report.layers_removed,
        vec![format!("sha256:{}", "f".repeat(64))]
    );
    assert!(store.has_blob(kept.digest()));
    for layer in kept_image.manifest.layers() {
        assert!(store.has_blob(layer.digest()));
    }
    assert!(layers.join(&live_layer).is_dir());
    assert!(layers.join("e".repeat(64)).is_dir());
    assert!(!dir.path().join("layers/.tmp-abc").exists());
    store.image("keep:v1").unwrap();
    // A second prune finds nothing.
    let again = store.prune(|| Ok::<_, StoreError>(in_use.clone())).unwrap();
    assert!(again.blobs_removed.is_empty() && again.layers_removed.is_empty());
}
