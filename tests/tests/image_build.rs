//! End to end: `berth image build` of busybox and of an image on top of it, checked through
//! `berth image inspect` and by unpacking berth's own store with umoci (the store is an OCI
//! layout, so other tools must read our images).

use std::fs;
use std::path::Path;

use berth_tests::{
    Berth, UmociImage, busybox_image, busybox_rootfs, require_root, run_err, run_json,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// `berth image build --from-dir DIR ARGS...`, which must succeed, as JSON.
fn build(berth: &Berth, dir: &Path, args: &[&str]) -> Value {
    run_json(berth.build_cmd(dir).args(args))
}

#[test]
fn busybox_fixture_builds_a_runnable_looking_image() {
    let berth = Berth::new();
    let digest = busybox_image(&berth, "busybox:test");
    let inspected = berth.json(["image", "inspect", "busybox:test"]);
    assert_eq!(inspected["digest"], digest);
    assert_eq!(inspected["config"]["config"]["Cmd"], json!(["/bin/sh"]));
    assert_eq!(inspected["config"]["architecture"], "amd64");
    assert_eq!(inspected["config"]["os"], "linux");
    assert_eq!(
        inspected["manifest"]["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        inspected["config"]["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn image_on_busybox_unpacks_with_umoci_with_the_whiteout_applied() {
    require_root();
    let berth = Berth::new();
    busybox_image(&berth, "busybox:1");
    let work = TempDir::new().unwrap();
    let top = work.path().join("top");
    fs::create_dir_all(top.join("app")).unwrap();
    fs::write(top.join("app/hello.txt"), "hello from the second layer\n").unwrap();
    let built = build(
        &berth,
        &top,
        &[
            "--tag",
            "app:2",
            "--base",
            "busybox:1",
            "--cmd",
            "/bin/sh",
            "--cmd",
            "-c",
            "--cmd",
            "cat /app/hello.txt",
            "--env",
            "PATH=/app:/bin",
            "--env",
            "GREETING=hi",
            "--workdir",
            "/app",
            "--user",
            "65534",
            "--whiteout",
            "/etc/hostname",
        ],
    );
    assert_eq!(built["layers"].as_array().unwrap().len(), 2);

    let inspected = berth.json(["image", "inspect", "app:2"]);
    let config = &inspected["config"]["config"];
    assert_eq!(
        config["Cmd"],
        json!(["/bin/sh", "-c", "cat /app/hello.txt"])
    );
    assert_eq!(
        config["Env"],
        json!(["PATH=/app:/bin", "GREETING=hi"]),
        "PATH replaced in place, GREETING added"
    );
    assert_eq!(config["WorkingDir"], "/app");
    assert_eq!(config["User"], "65534");
    assert_eq!(
        inspected["config"]["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(inspected["config"]["history"].as_array().unwrap().len(), 2);
    let base = berth.json(["image", "inspect", "busybox:1"]);
    assert_eq!(
        inspected["manifest"]["layers"][0],
        base["manifest"]["layers"][0]
    );

    // umoci reads berth's store directly: it takes `LAYOUT:NAME` and splits at the first
    // colon, so berth's full-name ref.names ("app:2") work as they are.
    let bundle = work.path().join("bundle");
    let image = UmociImage {
        layout: berth.data_dir.path().join("images"),
        tag: "app:2".into(),
    };
    image.unpack(&bundle);
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read_to_string(rootfs.join("app/hello.txt")).unwrap(),
        "hello from the second layer\n"
    );
    assert!(
        rootfs.join("bin/busybox").is_file(),
        "the base layer is there"
    );
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(rootfs.join("etc/passwd").is_file());
    assert!(
        !rootfs.join("etc/hostname").exists(),
        "the whiteout deleted the base's file"
    );
    assert!(
        !rootfs.join("etc/.wh.hostname").exists(),
        "the marker itself is not a file"
    );
}

#[test]
fn building_the_same_directory_twice_gives_the_same_layer() {
    let berth = Berth::new();
    let work = TempDir::new().unwrap();
    let dir = work.path().join("src");
    fs::create_dir_all(&dir).unwrap();
    busybox_rootfs(&dir);
    let first = build(&berth, &dir, &["--tag", "same:1"]);
    let second = build(
        &berth,
        &dir,
        &["--tag", "same:2", "--cmd", "[\"/bin/echo\", \"two\"]"],
    );
    assert_eq!(first["layers"], second["layers"]);
    assert_eq!(first["diff_ids"], second["diff_ids"]);
    let inspected = berth.json(["image", "inspect", "same:2"]);
    assert_eq!(
        inspected["config"]["config"]["Cmd"],
        json!(["/bin/echo", "two"]),
        "JSON exec form"
    );

    // With a fixed SOURCE_DATE_EPOCH the whole image is reproducible, not only the layer.
    let reproducible = |tag: &str| {
        let mut cmd = berth.build_cmd(&dir);
        cmd.args(["--tag", tag])
            .env("SOURCE_DATE_EPOCH", "1700000000");
        run_json(&mut cmd)
    };
    let (a, b) = (reproducible("repro:a"), reproducible("repro:b"));
    assert_eq!(a["digest"], b["digest"]);
    assert_eq!(
        berth.json(["image", "inspect", "repro:a"])["config"]["created"],
        "2023-11-14T22:13:20Z"
    );
}

#[test]
fn build_errors_name_the_problem_and_add_nothing() {
    let berth = Berth::new();
    let work = TempDir::new().unwrap();
    let err = berth.err([
        "image",
        "build",
        "--from-dir",
        "/nonexistent/berth-src",
        "--tag",
        "x:1",
    ]);
    assert!(
        err.contains("/nonexistent/berth-src") && err.contains("not a directory"),
        "{err}"
    );
    let err =
        run_err(
            berth
                .build_cmd(work.path())
                .args(["--tag", "x:1", "--base", "nothing:here"]),
        );
    assert!(err.contains("nothing:here"), "{err}");
    let err = run_err(
        berth
            .build_cmd(work.path())
            .args(["--tag", "x:1", "--cmd", "[not json"]),
    );
    assert!(err.contains("JSON array"), "{err}");
    assert!(berth.json(["image", "ls"]).as_array().unwrap().is_empty());
}
