//! End to end: `berth image import` of layouts made by umoci and archives made by skopeo, a
//! multi-platform index, concurrent imports, bad input, and `image rm` / `image prune`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::layout::{
    OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, blob_path, first_manifest, image_index, put_blob,
    read_index, read_json, set_index, sha256_hex, with_ref_name,
};
use berth_tests::{Berth, PATH_ENV, busybox_image, busybox_layout, run_json, run_ok, skopeo_copy};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A two-layer busybox OCI layout made by umoci (busybox rootfs, then one more file), tagged
/// `latest` as umoci names images.
fn umoci_layout(work: &Path) -> PathBuf {
    let image = busybox_layout(work, "latest");
    // A fresh unpack, so that the next repack is a diff against the first layer.
    let bundle = work.join("bundle");
    fs::remove_dir_all(&bundle).unwrap();
    image.unpack(&bundle);
    fs::write(
        bundle.join("rootfs/etc/second-layer"),
        "from the second layer\n",
    )
    .unwrap();
    image.repack(&bundle);
    image.config(&["--config.env", PATH_ENV]);
    image.gc();
    image.layout
}

/// `skopeo copy` of the layout's `latest` image to `destination`.
fn copy_latest(layout: &Path, destination: &str) {
    skopeo_copy(
        &format!("oci:{}:latest", layout.display()),
        destination,
        &[],
    );
}

/// A docker-archive of the layout's `latest` as `busybox:1`, in `work`.
fn docker_archive(work: &Path, layout: &Path) -> PathBuf {
    let archive = work.join("busybox-docker.tar");
    copy_latest(
        layout,
        &format!("docker-archive:{}:busybox:1", archive.display()),
    );
    archive
}

fn copy_dir(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

fn image_blobs(berth: &Berth, name: &str) -> BTreeSet<String> {
    let inspected = berth.json(["image", "inspect", name]);
    let mut blobs = BTreeSet::from([
        inspected["digest"].as_str().unwrap().to_string(),
        inspected["manifest"]["config"]["digest"]
            .as_str()
            .unwrap()
            .to_string(),
    ]);
    for layer in inspected["manifest"]["layers"].as_array().unwrap() {
        blobs.insert(layer["digest"].as_str().unwrap().to_string());
    }
    blobs
}

#[test]
fn umoci_layout_imports_with_its_digest_layers_and_config() {
    let work = TempDir::new().unwrap();
    let layout = umoci_layout(work.path());
    let (entry, manifest) = first_manifest(&layout);
    let berth = Berth::new();

    let err = berth.err(["image".as_ref(), "import".as_ref(), layout.as_os_str()]);
    assert!(
        err.contains("--tag NAME:TAG") && err.contains("\"latest\""),
        "{err}"
    );
    assert!(berth.image_names().is_empty());

    let imported = run_json(berth.import_cmd(&layout).args(["--tag", "busybox:1"]));
    assert_eq!(imported[0]["name"], "busybox:1");
    assert_eq!(imported[0]["digest"], entry["digest"]);

    let listed = berth.json(["image", "ls"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "busybox:1");
    assert_eq!(listed[0]["digest"], entry["digest"]);
    assert_eq!(listed[0]["layers"], 2);

    let inspected = berth.json(["image", "inspect", "busybox:1"]);
    assert_eq!(inspected["manifest"]["layers"], manifest["layers"]);
    assert_eq!(inspected["manifest"]["config"], manifest["config"]);
    assert_eq!(inspected["config"]["config"]["Cmd"], json!(["/bin/sh"]));
    assert_eq!(
        inspected["config"]["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for digest in image_blobs(&berth, "busybox:1") {
        let stored = fs::read(berth.blob_path(&digest)).unwrap();
        assert_eq!(format!("sha256:{}", sha256_hex(&stored)), digest);
    }
    assert!(berth.temp_files().is_empty());

    // Idempotent: the same names, digest and index.json bytes.
    let index_before = fs::read(berth.data_dir.path().join("images/index.json")).unwrap();
    let blobs_before = berth.stored_blobs();
    run_ok(berth.import_cmd(&layout).args(["--tag", "busybox:1"]));
    assert_eq!(
        fs::read(berth.data_dir.path().join("images/index.json")).unwrap(),
        index_before
    );
    assert_eq!(berth.stored_blobs(), blobs_before);
}

#[test]
fn skopeo_archives_import() {
    let work = TempDir::new().unwrap();
    let layout = umoci_layout(work.path());
    let (entry, manifest) = first_manifest(&layout);
    let oci_archive = work.path().join("busybox-oci.tar");
    copy_latest(&layout, &format!("oci-archive:{}", oci_archive.display()));
    let docker_archive = docker_archive(work.path(), &layout);
    let berth = Berth::new();

    let imported = run_json(berth.import_cmd(&oci_archive).args(["--tag", "from-oci:1"]));
    assert_eq!(
        imported[0]["digest"], entry["digest"],
        "an oci-archive keeps the manifest as is"
    );

    let imported = run_json(&mut berth.import_cmd(&docker_archive));
    // skopeo writes the RepoTag fully qualified.
    assert_eq!(imported[0]["name"], "docker.io/library/busybox:1");
    let inspected = berth.json(["image", "inspect", "docker.io/library/busybox:1"]);
    let layers = inspected["manifest"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for layer in layers {
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    }
    assert_eq!(
        inspected["manifest"]["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    // The docker layers are the uncompressed tars: their digests are the umoci image's diff_ids.
    let original_config = read_json(&blob_path(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let layer_digests: Vec<Value> = layers.iter().map(|l| l["digest"].clone()).collect();
    assert_eq!(json!(layer_digests), original_config["rootfs"]["diff_ids"]);
    assert_eq!(inspected["config"]["rootfs"], original_config["rootfs"]);
    assert_eq!(
        berth.image_names(),
        ["docker.io/library/busybox:1", "from-oci:1"]
    );
    assert!(berth.temp_files().is_empty());
}

#[test]
fn multi_platform_index_gives_amd64_unless_asked() {
    let work = TempDir::new().unwrap();
    let layout = umoci_layout(work.path());
    let (amd64_entry, manifest) = first_manifest(&layout);
    // Craft an arm64 sibling: same layers, a config saying arm64.
    let mut config = read_json(&blob_path(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    config["architecture"] = json!("arm64");
    let config_desc = put_blob(&layout, OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
    let mut arm_manifest = manifest.clone();
    arm_manifest["config"] = config_desc;
    let mut arm_entry = put_blob(
        &layout,
        OCI_MANIFEST,
        &serde_json::to_vec(&arm_manifest).unwrap(),
    );
    arm_entry["platform"] = json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
    let mut amd_entry = json!({"mediaType": amd64_entry["mediaType"], "digest": amd64_entry["digest"], "size": amd64_entry["size"]});
    amd_entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let nested = image_index(vec![arm_entry, amd_entry]);
    let index_entry = put_blob(&layout, OCI_INDEX, &serde_json::to_vec(&nested).unwrap());
    set_index(&layout, vec![with_ref_name(index_entry, "multi/busybox:1")]);

    let berth = Berth::new();
    let imported = run_json(&mut berth.import_cmd(&layout));
    assert_eq!(imported[0]["name"], "multi/busybox:1");
    assert_eq!(imported[0]["digest"], amd64_entry["digest"]);

    run_ok(berth.import_cmd(&layout).args([
        "--platform",
        "linux/arm64/v8",
        "--tag",
        "multi/busybox:arm",
    ]));
    let inspected = berth.json(["image", "inspect", "multi/busybox:arm"]);
    assert_eq!(inspected["config"]["architecture"], "arm64");
    assert_ne!(inspected["digest"], amd64_entry["digest"]);
}

#[test]
fn concurrent_imports_of_different_images_keep_both_names() {
    let work = TempDir::new().unwrap();
    let layout = umoci_layout(work.path());
    let docker_archive = docker_archive(work.path(), &layout);
    for round in 0..4 {
        let berth = Berth::new();
        let mut first = berth.import_cmd(&layout);
        first.args(["--tag", &format!("first:{round}")]);
        let mut second = berth.import_cmd(&docker_archive);
        second.args(["--tag", &format!("second:{round}")]);
        // Both running at once, then both waited for.
        let children = [first.spawn().unwrap(), second.spawn().unwrap()];
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let index = read_index(&berth.data_dir.path().join("images"));
        let mut indexed: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        indexed.sort();
        assert_eq!(
            indexed,
            [format!("first:{round}"), format!("second:{round}")]
        );
        assert!(berth.temp_files().is_empty());
    }
}

/// A broken copy of the layout, made by `mutate(copy, index entry, manifest)`.
fn broken(
    work: &Path,
    layout: &Path,
    name: &str,
    mutate: impl FnOnce(&Path, &Value, &Value),
) -> PathBuf {
    let copy = work.join(name);
    copy_dir(layout, &copy);
    let (entry, manifest) = first_manifest(&copy);
    mutate(&copy, &entry, &manifest);
    copy
}

/// Replaces the layout's manifest with `manifest` (bytes), pointing index.json at it.
fn replace_manifest(layout: &Path, bytes: &[u8]) {
    let entry = put_blob(layout, OCI_MANIFEST, bytes);
    set_index(layout, vec![with_ref_name(entry, "latest")]);
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario whose steps build on each other, read top to bottom"
)]
fn bad_input_fails_naming_the_problem_and_changes_nothing() {
    let work = TempDir::new().unwrap();
    let layout = umoci_layout(work.path());
    let (_, manifest) = first_manifest(&layout);
    let top_layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let berth = Berth::new();
    // One good image so that "unchanged" is not trivially "empty". It shares no blob with the
    // layout: a blob already in the store is not read from the source again, so a corrupt
    // copy of it would go unnoticed (rightly: the store's copy is verified).
    busybox_image(&berth, "good:1");
    let listing_before = berth.json(["image", "ls"]);

    let empty_dir = work.path().join("empty-dir");
    fs::create_dir(&empty_dir).unwrap();
    let junk = work.path().join("junk.bin");
    fs::write(&junk, vec![0x42u8; 3000]).unwrap();
    let archive = work.path().join("busybox-oci.tar");
    copy_latest(&layout, &format!("oci-archive:{}", archive.display()));
    let truncated = work.path().join("truncated.tar");
    let bytes = fs::read(&archive).unwrap();
    fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();

    let cases: Vec<(PathBuf, String)> = vec![
        (empty_dir, "neither an OCI image layout".into()),
        (junk, "junk.bin is neither an OCI image layout".into()),
        (
            broken(work.path(), &layout, "bad-index", |dir, _, _| {
                fs::write(dir.join("index.json"), "{\"manifests\": [").unwrap()
            }),
            "index.json is not valid JSON".into(),
        ),
        (
            broken(work.path(), &layout, "bad-manifest", |dir, _, _| {
                replace_manifest(dir, b"<html>not json</html>")
            }),
            "is not valid JSON".into(),
        ),
        (
            broken(work.path(), &layout, "odd-layer", |dir, _, manifest| {
                let mut odd = manifest.clone();
                odd["layers"][0]["mediaType"] = json!("application/x-berth-unknown");
                replace_manifest(dir, &serde_json::to_vec(&odd).unwrap());
            }),
            "media type \"application/x-berth-unknown\"".into(),
        ),
        (
            broken(work.path(), &layout, "odd-config", |dir, _, manifest| {
                let mut odd = manifest.clone();
                odd["config"]["mediaType"] = json!("application/x-berth-config");
                replace_manifest(dir, &serde_json::to_vec(&odd).unwrap());
            }),
            "application/x-berth-config".into(),
        ),
        (
            broken(work.path(), &layout, "missing-blob", |dir, _, _| {
                fs::remove_file(blob_path(dir, &top_layer)).unwrap()
            }),
            format!("refers to blob {top_layer}, which the layout"),
        ),
        (
            broken(work.path(), &layout, "corrupt-blob", |dir, _, _| {
                let path = blob_path(dir, &top_layer);
                let mut content = fs::read(&path).unwrap();
                content[10] ^= 0x55;
                fs::write(&path, content).unwrap();
            }),
            format!(
                "{}): its content hashes to",
                top_layer.trim_start_matches("sha256:")
            ),
        ),
        (
            broken(work.path(), &layout, "missized-blob", |dir, _, _| {
                let path = blob_path(dir, &top_layer);
                let mut content = fs::read(&path).unwrap();
                content.extend_from_slice(b"trailing");
                fs::write(&path, content).unwrap();
            }),
            "bytes but its descriptor says".into(),
        ),
        (truncated, "truncated.tar is truncated".into()),
    ];
    for (path, needle) in cases {
        let out = berth
            .import_cmd(&path)
            .args(["--tag", "bad:1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{}: import should fail",
            path.display()
        );
        assert!(
            stderr.contains(&needle),
            "{}: {stderr:?} should contain {needle:?}",
            path.display()
        );
        assert_eq!(
            berth.json(["image", "ls"]),
            listing_before,
            "{}",
            path.display()
        );
        assert!(
            berth.temp_files().is_empty(),
            "{}: {:?}",
            path.display(),
            berth.temp_files()
        );
    }
}

#[test]
fn rm_and_prune_remove_exactly_the_unreferenced_blobs() {
    let work = TempDir::new().unwrap();
    let layout = umoci_layout(work.path());
    let docker_archive = docker_archive(work.path(), &layout);
    let berth = Berth::new();
    run_ok(berth.import_cmd(&layout).args(["--tag", "kept:1"]));
    run_ok(
        berth
            .import_cmd(&docker_archive)
            .args(["--tag", "dropped:1"]),
    );
    let kept = image_blobs(&berth, "kept:1");
    let dropped = image_blobs(&berth, "dropped:1");
    assert!(
        !dropped.is_subset(&kept),
        "the docker import has blobs of its own"
    );

    let removed = berth.json(["image", "rm", "dropped:1"]);
    assert_eq!(removed[0]["reference"], "dropped:1");
    assert_eq!(berth.image_names(), ["kept:1"]);
    let expected: BTreeSet<String> = berth.stored_blobs().difference(&kept).cloned().collect();
    assert!(!expected.is_empty());

    let report = berth.json(["image", "prune"]);
    let pruned: BTreeSet<String> = report["blobs_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert_eq!(pruned, expected);
    assert_eq!(
        berth.stored_blobs(),
        kept,
        "every blob of the tagged image stays"
    );
    // The kept image is still whole.
    let inspected = berth.json(["image", "inspect", "kept:1"]);
    assert_eq!(inspected["name"], "kept:1");
    let report = berth.json(["image", "prune"]);
    assert!(report["blobs_removed"].as_array().unwrap().is_empty());
}
