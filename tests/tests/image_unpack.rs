//! `berth image unpack` end to end: a 3-layer image built with umoci (busybox base; a layer
//! adding files, links, odd modes and owners; a layer deleting files and directories and
//! recreating one), imported with `berth image import`, unpacked by berth and by umoci, and
//! the trees compared. Also an overlay root filesystem of the same image. Needs root, umoci.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use berth_images::progress::NoProgress;
use berth_images::snapshot::{Rootfs, RootfsKind, prepare_rootfs, snapshots_dir};
use berth_tests::{Berth, UmociImage, busybox_rootfs, compare_trees, require_root, run_ok};
use tempfile::TempDir;

const NAME: &str = "test/unpack:v1";

/// Builds the image `latest` of the layout `work/oci`.
fn build_image(work: &Path) -> UmociImage {
    let image = UmociImage::create(&work.join("oci"), "latest");
    let bundle = work.join("bundle");
    image.unpack(&bundle);
    let r = bundle.join("rootfs");
    busybox_rootfs(&r);
    fs::create_dir_all(r.join("var/lib/old")).unwrap();
    fs::write(r.join("var/lib/old/state"), "old state\n").unwrap();
    fs::create_dir_all(r.join("usr/share/tool")).unwrap();
    fs::write(r.join("usr/share/tool/a"), "a\n").unwrap();
    fs::write(r.join("usr/share/tool/b"), "b\n").unwrap();
    image.repack_refreshing(&bundle);

    // Layer 2: files, directories, links, odd modes and owners, special files.
    let app = r.join("opt/app");
    fs::create_dir_all(app.join("sub/deeper")).unwrap();
    fs::write(app.join("file"), "payload\n").unwrap();
    fs::write(app.join("sub/deeper/x"), "x\n").unwrap();
    fs::write(app.join("suid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(app.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(app.join("owned"), "owned\n").unwrap();
    std::os::unix::fs::chown(app.join("owned"), Some(1234), Some(5678)).unwrap();
    fs::write(app.join("private"), "p\n").unwrap();
    fs::set_permissions(app.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(app.join("sticky")).unwrap();
    fs::set_permissions(app.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::lchown(app.join("sticky"), Some(42), Some(43)).unwrap();
    symlink("../../etc/passwd", app.join("rel-link")).unwrap();
    symlink("/etc/hostname", app.join("abs-link")).unwrap();
    symlink("nowhere", app.join("dangling")).unwrap();
    fs::hard_link(app.join("file"), app.join("hardlink")).unwrap();
    run_ok(Command::new("mkfifo").arg(app.join("fifo")));
    run_ok(
        Command::new("mknod")
            .arg(app.join("null"))
            .args(["c", "1", "3"]),
    );
    fs::write(r.join("etc/hostname"), "changed\n").unwrap();
    image.repack_refreshing(&bundle);

    // Layer 3: delete files and directories of the lower layers, recreate one with new content.
    fs::remove_file(r.join("etc/group")).unwrap();
    fs::remove_dir_all(r.join("var/lib/old")).unwrap();
    fs::remove_dir_all(app.join("sub")).unwrap();
    fs::remove_file(app.join("private")).unwrap();
    fs::remove_dir_all(r.join("usr/share/tool")).unwrap();
    fs::create_dir(r.join("usr/share/tool")).unwrap();
    fs::write(r.join("usr/share/tool/c"), "c\n").unwrap();
    image.repack_refreshing(&bundle);
    image.config(&["--config.cmd", "/bin/sh"]);
    image
}

struct Fixture {
    work: TempDir,
    image: UmociImage,
    berth: Berth,
}

fn fixture() -> Fixture {
    require_root();
    let work = tempfile::Builder::new()
        .prefix("berth-e2e-unpack-")
        .tempdir()
        .unwrap();
    let image = build_image(work.path());
    let berth = Berth::new();
    run_ok(
        berth
            .import_cmd(&image.layout)
            .args(["--ref", &image.tag, "--tag", NAME]),
    );
    Fixture { work, image, berth }
}

#[test]
fn berth_unpack_gives_the_same_tree_as_umoci() {
    let fx = fixture();
    let ours = fx.work.path().join("ours");
    let summary = fx
        .berth
        .json(["image", "unpack", NAME, &ours.display().to_string()]);
    assert_eq!(summary["layers"], 3, "{summary}");
    assert!(summary["entries"].as_u64().unwrap() > 40, "{summary}");
    let theirs = fx.work.path().join("theirs");
    fx.image.unpack(&theirs);
    let diffs = compare_trees(&theirs.join("rootfs"), &ours, false);
    assert!(
        diffs.is_empty(),
        "berth and umoci differ:\n{}",
        diffs.join("\n")
    );
    // The deletions really happened (so an empty comparison is not vacuous).
    assert!(!ours.join("etc/group").exists());
    assert!(!ours.join("var/lib/old").exists());
    assert!(!ours.join("usr/share/tool/a").exists());
    assert_eq!(fs::read(ours.join("usr/share/tool/c")).unwrap(), b"c\n");
    assert_eq!(fs::read(ours.join("etc/hostname")).unwrap(), b"changed\n");
}

#[test]
fn unpack_refuses_a_non_empty_directory_and_unknown_images() {
    let fx = fixture();
    let dir = fx.work.path().join("full");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("mine"), "keep").unwrap();
    let err = fx
        .berth
        .err(["image", "unpack", NAME, &dir.display().to_string()]);
    assert!(err.contains("not an empty directory"), "{err}");
    assert_eq!(fs::read(dir.join("mine")).unwrap(), b"keep");
    let err = fx.berth.err([
        "image",
        "unpack",
        "nosuch:latest",
        &fx.work.path().join("x").display().to_string(),
    ]);
    assert!(err.contains("nosuch"), "{err}");
}

/// Takes a snapshot down if the test fails before it does.
struct RootfsGuard(Option<Rootfs>);

impl Drop for RootfsGuard {
    fn drop(&mut self) {
        if let Some(rootfs) = self.0.take() {
            let _ = rootfs.remove();
        }
    }
}

fn mounted(path: &Path) -> bool {
    let needle = path.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(needle.as_str()))
}

#[test]
fn overlay_rootfs_of_an_umoci_image() {
    let fx = fixture();
    let store = berth_images::Store::open(fx.berth.data_dir.path()).unwrap();
    let image = store.image(NAME).unwrap();
    let dir = snapshots_dir(&store).join("e2e");
    let mut guard = RootfsGuard(Some(
        prepare_rootfs(&store, &image, &dir, &NoProgress).unwrap(),
    ));
    let root = guard.0.as_ref().unwrap().path().to_path_buf();
    assert_eq!(guard.0.as_ref().unwrap().kind(), RootfsKind::Overlay);
    assert!(mounted(&root));
    assert!(root.join("bin/busybox").is_file());
    assert_eq!(fs::read(root.join("opt/app/file")).unwrap(), b"payload\n");
    assert!(
        !root.join("etc/group").exists(),
        "whiteout does not hide the lower file"
    );
    assert!(
        !root.join("var/lib/old").exists(),
        "whiteout does not hide the lower dir"
    );
    let tool: Vec<_> = fs::read_dir(root.join("usr/share/tool"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        tool,
        vec![std::ffi::OsString::from("c")],
        "recreated dir shows lower entries"
    );
    fs::write(root.join("etc/new"), "w").unwrap();
    assert_eq!(fs::read(dir.join("upper/etc/new")).unwrap(), b"w");
    // The flat unpack of the same image agrees with the overlay view.
    let flat = fx.work.path().join("flat");
    fx.berth
        .ok(["image", "unpack", NAME, &flat.display().to_string()]);
    fs::remove_file(root.join("etc/new")).unwrap();
    let diffs = compare_trees(&flat, &root, true);
    assert!(
        diffs.is_empty(),
        "overlay and flat differ:\n{}",
        diffs.join("\n")
    );
    guard.0.take().unwrap().remove().unwrap();
    assert!(!mounted(&root), "still mounted");
    assert!(!dir.exists(), "snapshot dir left");
}
