//! Library-level import tests on crafted layouts and archives: selection, naming, platforms,
//! verification, and that failures leave nothing named and no temp files.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use berth_images::Reference;
use berth_images::import::{ImportError, ImportOptions, Platform, import};
use berth_images::progress::NoProgress;
use common::layout::*;
use common::{Fixture, gzip, sha256_hex};
use serde_json::json;

fn opts() -> ImportOptions {
    ImportOptions::default()
}

fn tagged(tag: &str) -> ImportOptions {
    ImportOptions {
        tag: Some(Reference::parse(tag).unwrap()),
        ..ImportOptions::default()
    }
}

/// A failed import must name nothing and leave no temp file.
fn assert_clean_failure(f: &Fixture, err: &ImportError, needle: &str) {
    let message = err.to_string();
    assert!(
        message.contains(needle),
        "error {message:?} should mention {needle:?}"
    );
    assert!(
        f.store.list().unwrap().is_empty(),
        "a failed import named an image"
    );
    assert!(
        f.temp_files().is_empty(),
        "temp files left: {:?}",
        f.temp_files()
    );
}

fn two_layer_image() -> Crafted {
    craft_image(
        "amd64",
        &[("etc/one", b"first layer"), ("etc/two", b"second layer")],
    )
}

#[test]
fn layout_import_stores_every_blob_and_names_by_full_ref() {
    let f = Fixture::new();
    let image = two_layer_image();
    let mut layout = Layout::new(&f.path("layout"));
    layout.add(&image, Some("example.com/team/app:1"));
    layout.finish();

    let imported = import(&f.store, &layout.dir, &opts(), &NoProgress).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, "example.com/team/app:1");
    assert_eq!(imported[0].digest().to_string(), image.manifest_digest());
    assert_eq!(imported[0].manifest.layers().len(), 2);
    for blob in [
        &image.manifest,
        &image.config,
        &image.layers[0],
        &image.layers[1],
    ] {
        let stored = f.stored_blob_path(&sha256_hex(blob));
        assert_eq!(fs::read(&stored).unwrap(), *blob, "{}", stored.display());
    }
    let listed = f.store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "example.com/team/app:1");
}

#[test]
fn bare_tag_ref_name_needs_tag_and_tag_names_it() {
    let f = Fixture::new();
    let mut layout = Layout::new(&f.path("layout"));
    layout.add(&two_layer_image(), Some("latest"));
    layout.finish();
    let err = import(&f.store, &layout.dir, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ImportError::NeedsName { .. }), "{err}");
    assert_clean_failure(&f, &err, "--tag");

    let imported = import(&f.store, &layout.dir, &tagged("busybox:1"), &NoProgress).unwrap();
    assert_eq!(imported[0].name, "busybox:1");
}

#[test]
fn ref_selects_one_image_and_tag_refuses_several() {
    let f = Fixture::new();
    let first = craft_image("amd64", &[("a", b"a")]);
    let second = craft_image("amd64", &[("b", b"b")]);
    let mut layout = Layout::new(&f.path("layout"));
    layout.add(&first, Some("one:1"));
    layout.add(&second, Some("two:1"));
    layout.finish();

    let err = import(&f.store, &layout.dir, &tagged("x:1"), &NoProgress).unwrap_err();
    assert!(
        matches!(err, ImportError::TagForSeveral { count: 2, .. }),
        "{err}"
    );
    assert_clean_failure(&f, &err, "--ref");

    let err = import(
        &f.store,
        &layout.dir,
        &ImportOptions {
            ref_name: Some("three:1".into()),
            ..opts()
        },
        &NoProgress,
    )
    .unwrap_err();
    assert_clean_failure(&f, &err, "one:1, two:1");

    let only_second = ImportOptions {
        ref_name: Some("two:1".into()),
        tag: Some(Reference::parse("renamed:2").unwrap()),
        ..opts()
    };
    let imported = import(&f.store, &layout.dir, &only_second, &NoProgress).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].digest().to_string(), second.manifest_digest());
    assert_eq!(f.image_names(), ["renamed:2"]);

    let all = import(&f.store, &layout.dir, &opts(), &NoProgress).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(f.image_names(), ["one:1", "renamed:2", "two:1"]);
}

#[test]
fn nested_index_picks_the_requested_platform() {
    let f = Fixture::new();
    let amd64 = craft_image("amd64", &[("arch", b"amd64")]);
    let arm64 = craft_image("arm64", &[("arch", b"arm64")]);
    let mut layout = Layout::new(&f.path("layout"));
    layout.add_multi_platform(&[(&arm64, "arm64"), (&amd64, "amd64")], "multi:1");
    layout.finish();

    let imported = import(&f.store, &layout.dir, &opts(), &NoProgress).unwrap();
    assert_eq!(imported[0].digest().to_string(), amd64.manifest_digest());
    assert_eq!(imported[0].config.architecture().to_string(), "amd64");
    // The arm64 layer was not needed, so not copied.
    assert!(!f.stored_blob_path(&sha256_hex(&arm64.layers[0])).exists());

    let arm = ImportOptions {
        platform: "linux/arm64".parse().unwrap(),
        tag: Some(Reference::parse("multi:arm").unwrap()),
        ..opts()
    };
    let imported = import(&f.store, &layout.dir, &arm, &NoProgress).unwrap();
    assert_eq!(imported[0].digest().to_string(), arm64.manifest_digest());

    let s390 = ImportOptions {
        platform: Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        },
        tag: Some(Reference::parse("multi:s390x").unwrap()),
        ..opts()
    };
    let err = import(&f.store, &layout.dir, &s390, &NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("linux/arm64, linux/amd64"),
        "{err}"
    );
}

#[test]
fn reimport_is_idempotent() {
    let f = Fixture::new();
    let mut layout = Layout::new(&f.path("layout"));
    layout.add(&two_layer_image(), Some("app:1"));
    layout.finish();
    let first = import(&f.store, &layout.dir, &opts(), &NoProgress).unwrap();
    let index_before = fs::read(f.data_dir().join("images/index.json")).unwrap();
    let blobs_before = f.blob_count();
    let second = import(&f.store, &layout.dir, &opts(), &NoProgress).unwrap();
    assert_eq!(first[0].digest(), second[0].digest());
    assert_eq!(
        fs::read(f.data_dir().join("images/index.json")).unwrap(),
        index_before
    );
    assert_eq!(f.blob_count(), blobs_before);
}

#[test]
fn bad_layouts_fail_with_the_problem_named() {
    let f = Fixture::new();

    let not_layout = f.path("plain-dir");
    fs::create_dir_all(&not_layout).unwrap();
    let err = import(&f.store, &not_layout, &opts(), &NoProgress).unwrap_err();
    assert_clean_failure(&f, &err, "neither an OCI image layout");

    let junk = f.path("junk.bin");
    fs::write(&junk, vec![7u8; 4096]).unwrap();
    let err = import(&f.store, &junk, &opts(), &NoProgress).unwrap_err();
    assert_clean_failure(&f, &err, "junk.bin");

    let bad_index = Layout::new(&f.path("bad-index"));
    fs::write(bad_index.dir.join("index.json"), b"{not json").unwrap();
    let err = import(&f.store, &bad_index.dir, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ImportError::InvalidJson { .. }), "{err}");
    assert_clean_failure(&f, &err, "index.json");

    // A manifest blob that is not JSON (its digest is right).
    let mut bad_manifest = Layout::new(&f.path("bad-manifest"));
    let garbage = b"this is no manifest".to_vec();
    bad_manifest.put(&garbage);
    bad_manifest.entries.push({
        let mut d = desc("application/vnd.oci.image.manifest.v1+json", &garbage);
        d["annotations"] = json!({"org.opencontainers.image.ref.name": "x:1"});
        d
    });
    bad_manifest.finish();
    let err = import(&f.store, &bad_manifest.dir, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ImportError::InvalidJson { .. }), "{err}");
    assert_clean_failure(
        &f,
        &err,
        &format!("manifest sha256:{}", sha256_hex(&garbage)),
    );
}

/// A layout whose one image is altered by `mutate` (after the blobs are written).
fn broken_layout(f: &Fixture, name: &str, mutate: impl FnOnce(&Layout, &Crafted)) -> PathBuf {
    let image = two_layer_image();
    let mut layout = Layout::new(&f.path(name));
    layout.add(&image, Some("broken:1"));
    layout.finish();
    mutate(&layout, &image);
    layout.dir.clone()
}

#[test]
fn missing_corrupt_and_missized_blobs_are_refused() {
    // A fresh store for each case: blobs verified by an earlier failed import stay in the store
    // (for prune), and a blob already stored is not read from the source again.
    let f = Fixture::new();
    let dir = broken_layout(&f, "missing", |layout, image| {
        fs::remove_file(layout.blob_path(&image.layers[1])).unwrap();
    });
    let err = import(&f.store, &dir, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ImportError::MissingBlob { .. }), "{err}");
    let image = two_layer_image();
    assert_clean_failure(&f, &err, &sha256_hex(&image.layers[1]));

    let f = Fixture::new();
    let dir = broken_layout(&f, "corrupt", |layout, image| {
        // Same size, different content: only the digest check can catch it.
        let mut bytes = image.layers[0].clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(layout.blob_path(&image.layers[0]), bytes).unwrap();
    });
    let err = import(&f.store, &dir, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ImportError::DigestMismatch { .. }), "{err}");
    assert_clean_failure(&f, &err, &sha256_hex(&image.layers[0]));
    assert!(!f.stored_blob_path(&sha256_hex(&image.layers[0])).exists());

    let f = Fixture::new();
    let dir = broken_layout(&f, "missized", |layout, image| {
        let mut bytes = image.layers[0].clone();
        bytes.extend_from_slice(b"extra");
        fs::write(layout.blob_path(&image.layers[0]), bytes).unwrap();
    });
    let err = import(&f.store, &dir, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ImportError::SizeMismatch { .. }), "{err}");
    assert_clean_failure(&f, &err, "bytes but its descriptor says");
}

#[test]
fn unknown_media_types_are_refused() {
    let f = Fixture::new();
    for (kind, field) in [
        ("layer", "layers"),
        ("config", "config"),
        ("manifest", "mediaType"),
    ] {
        let image = two_layer_image();
        let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
        match field {
            "layers" => manifest["layers"][1]["mediaType"] = json!("application/x-strange"),
            "config" => manifest["config"]["mediaType"] = json!("application/x-strange"),
            _ => manifest["mediaType"] = json!("application/x-strange"),
        }
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let mut layout = Layout::new(&f.path(kind));
        layout.put_image(&image);
        layout.put(&bytes);
        let mut entry = desc("application/vnd.oci.image.manifest.v1+json", &bytes);
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": "odd:1"});
        layout.entries.push(entry);
        layout.finish();
        let err = import(&f.store, &layout.dir, &opts(), &NoProgress).unwrap_err();
        assert!(
            matches!(err, ImportError::UnsupportedMediaType { .. }),
            "{kind}: {err}"
        );
        assert_clean_failure(&f, &err, "application/x-strange");
        assert!(err.to_string().contains(kind), "{kind}: {err}");
    }
}

fn oci_archive(f: &Fixture, ref_name: &str) -> (PathBuf, Crafted) {
    let image = two_layer_image();
    let mut layout = Layout::new(&f.path("for-archive"));
    layout.add(&image, Some(ref_name));
    layout.finish();
    let archive = f.path("image.oci.tar");
    tar_dir(&layout.dir, &archive);
    (archive, image)
}

#[test]
fn oci_archive_imports_like_its_layout() {
    let f = Fixture::new();
    let (archive, image) = oci_archive(&f, "archived/app:3");
    let imported = import(&f.store, &archive, &opts(), &NoProgress).unwrap();
    assert_eq!(imported[0].name, "archived/app:3");
    assert_eq!(imported[0].digest().to_string(), image.manifest_digest());
    assert!(f.store.has_blob(imported[0].manifest.layers()[1].digest()));
    assert!(f.temp_files().is_empty());
}

#[test]
fn truncated_archives_are_reported_as_truncated() {
    let f = Fixture::new();
    let (archive, _) = oci_archive(&f, "archived/app:3");
    let bytes = fs::read(&archive).unwrap();
    // Cut inside a member's data, and exactly at a member boundary (no end marker).
    let inside = f.path("cut-inside.tar");
    fs::write(&inside, &bytes[..bytes.len() / 2 + 100]).unwrap();
    let err = import(&f.store, &inside, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ImportError::Truncated { .. }), "{err}");
    assert_clean_failure(&f, &err, "cut-inside.tar is truncated");

    let boundary = f.path("cut-boundary.tar");
    let mut archive_reader = tar::Archive::new(bytes.as_slice());
    let ends: Vec<u64> = archive_reader
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            e.raw_file_position() + e.size().div_ceil(512) * 512
        })
        .collect();
    let cut = usize::try_from(ends[ends.len() - 2]).unwrap();
    fs::write(&boundary, &bytes[..cut]).unwrap();
    let err = import(&f.store, &boundary, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ImportError::Truncated { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("cut-boundary.tar is truncated: no end-of-archive marker"),
        "{err}"
    );
    assert!(f.store.list().unwrap().is_empty());
    assert!(f.temp_files().is_empty());
}

#[test]
fn archive_blob_not_matching_its_name_is_refused() {
    let f = Fixture::new();
    let fake = format!("blobs/sha256/{}", "a".repeat(64));
    let archive = f.path("lying.tar");
    write_tar(
        &archive,
        &[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            (&fake, b"not what the name says"),
        ],
    );
    let err = import(&f.store, &archive, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ImportError::DigestMismatch { .. }), "{err}");
    assert_clean_failure(&f, &err, &fake);
}

/// A docker-archive with manifest.json last (as `docker save` may write it).
fn docker_archive(f: &Fixture, diff_ids_override: Option<Vec<String>>) -> (PathBuf, Crafted) {
    let tar1 = layer_tar("etc/one", b"plain tar layer");
    let tar2 = layer_tar("etc/two", b"gzip layer");
    let gz2 = gzip(&tar2);
    let diff_ids = diff_ids_override.unwrap_or_else(|| {
        vec![
            format!("sha256:{}", sha256_hex(&tar1)),
            format!("sha256:{}", sha256_hex(&tar2)),
        ]
    });
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_name = format!("{}.json", sha256_hex(&config));
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": ["docker.io/library/dock:5", "dock:latest"],
        "Layers": ["l1/layer.tar", "l2/layer.tar"],
    }]))
    .unwrap();
    let archive = f.path("docker.tar");
    write_tar(
        &archive,
        &[
            ("l1/layer.tar", &tar1),
            ("l2/layer.tar", &gz2),
            (&config_name, &config),
            ("manifest.json", &manifest),
        ],
    );
    let crafted = Crafted {
        manifest,
        config,
        layers: vec![tar1.clone(), gz2],
        tars: vec![tar1, tar2],
    };
    (archive, crafted)
}

#[test]
fn docker_archive_becomes_an_oci_image_with_checked_diff_ids() {
    let f = Fixture::new();
    let (archive, crafted) = docker_archive(&f, None);
    let imported = import(&f.store, &archive, &opts(), &NoProgress).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(f.image_names(), ["dock:latest", "docker.io/library/dock:5"]);
    let manifest = &imported[0].manifest;
    assert_eq!(
        manifest.config().media_type().to_string(),
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        manifest.config().digest().digest(),
        sha256_hex(&crafted.config)
    );
    let types: Vec<String> = manifest
        .layers()
        .iter()
        .map(|l| l.media_type().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip"
        ]
    );
    assert_eq!(
        manifest.layers()[1].digest().digest(),
        sha256_hex(&crafted.layers[1])
    );
    // Re-import gives the same manifest.
    let again = import(&f.store, &archive, &opts(), &NoProgress).unwrap();
    assert_eq!(again[0].digest(), imported[0].digest());
}

#[test]
fn docker_archive_with_wrong_diff_id_is_refused() {
    let f = Fixture::new();
    let wrong = format!("sha256:{}", "b".repeat(64));
    let tar1 = layer_tar("etc/one", b"plain tar layer");
    let (archive, _) = docker_archive(
        &f,
        Some(vec![format!("sha256:{}", sha256_hex(&tar1)), wrong.clone()]),
    );
    let err = import(&f.store, &archive, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ImportError::DiffIdMismatch { .. }), "{err}");
    assert_clean_failure(&f, &err, &wrong);
    assert!(err.to_string().contains("l2/layer.tar"), "{err}");
}

#[test]
fn docker_archive_naming_a_missing_layer_is_refused() {
    let f = Fixture::new();
    let manifest = br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["nowhere/layer.tar"]}]"#;
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;
    let archive = f.path("missing-layer.tar");
    write_tar(&archive, &[("manifest.json", manifest), ("c.json", config)]);
    let err = import(&f.store, &archive, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, ImportError::MissingBlob { .. }), "{err}");
    assert_clean_failure(&f, &err, "nowhere/layer.tar");
}

#[test]
fn layout_path_that_does_not_exist_is_named() {
    let f = Fixture::new();
    let err = import(
        &f.store,
        Path::new("/nonexistent/berth-layout"),
        &opts(),
        &NoProgress,
    )
    .unwrap_err();
    assert_clean_failure(&f, &err, "/nonexistent/berth-layout");
}
