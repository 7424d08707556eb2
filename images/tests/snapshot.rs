//! Container root filesystems: overlay of the unpacked layers, the forced copy fallback,
//! removal, and prune keeping layers under live snapshots. Needs root.

mod common;

use std::fs;
use std::path::Path;

use berth_images::progress::NoProgress;
use berth_images::snapshot::{
    Rootfs, RootfsKind, SnapshotOptions, layers_in_use, prepare_rootfs, prepare_rootfs_with,
    snapshots_dir,
};
use common::raw_tar::{Entry, Layer};
use common::{Fixture, listing};

/// Unmounts and removes a snapshot if a test fails before `remove` does.
struct SnapshotGuard(Option<Rootfs>);

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        if let Some(rootfs) = self.0.take() {
            let _ = nix::mount::umount2(rootfs.path(), nix::mount::MntFlags::MNT_DETACH);
            let _ = fs::remove_dir_all(rootfs.dir());
        }
    }
}

fn mounted(path: &Path) -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = path.display().to_string();
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(needle.as_str()))
}

fn layers() -> Vec<Layer> {
    vec![
        Layer::gzip(&[
            Entry::dir("etc"),
            Entry::file("etc/base", b"base"),
            Entry::file("etc/removed", b"r"),
            Entry::dir("opt"),
            Entry::file("opt/old", b"old"),
        ]),
        Layer::gzip(&[
            Entry::dir("etc"),
            Entry::file("etc/.wh.removed", b""),
            Entry::file("etc/base", b"upper wins"),
            Entry::dir("opt"),
            Entry::file("opt/.wh..wh..opq", b""),
            Entry::file("opt/new", b"new"),
        ]),
    ]
}

fn check_view(root: &Path) {
    assert_eq!(fs::read(root.join("etc/base")).unwrap(), b"upper wins");
    assert!(
        !root.join("etc/removed").exists(),
        "whiteout did not hide the lower file"
    );
    assert_eq!(
        listing(&root.join("opt")),
        vec!["new".to_string()],
        "opaque dir shows lower entries"
    );
}

#[test]
fn overlay_rootfs_shows_layers_takes_writes_and_unmounts() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let fx = Fixture::new();
    let image = fx.image("snap:latest", &layers());
    let dir = snapshots_dir(&fx.store).join("c1");
    let mut guard = SnapshotGuard(Some(
        prepare_rootfs(&fx.store, &image, &dir, &NoProgress).unwrap(),
    ));
    let rootfs = guard.0.as_ref().unwrap();
    assert_eq!(rootfs.kind(), RootfsKind::Overlay);
    assert!(mounted(rootfs.path()), "rootfs is not a mount point");
    check_view(rootfs.path());
    fs::write(rootfs.path().join("etc/written"), b"w").unwrap();
    fs::remove_file(rootfs.path().join("etc/base")).unwrap();
    assert_eq!(
        fs::read(dir.join("upper/etc/written")).unwrap(),
        b"w",
        "write did not go to upper"
    );
    let layer_dirs =
        berth_images::unpack::ensure_layers(&fx.store, &image, &Default::default(), &NoProgress)
            .unwrap();
    assert_eq!(
        fs::read(layer_dirs[1].join("etc/base")).unwrap(),
        b"upper wins",
        "a layer changed"
    );

    // Prune keeps the layers of a live snapshot even once no image names them.
    fx.store.untag("snap:latest").unwrap();
    let in_use = layers_in_use(&fx.store).unwrap();
    assert_eq!(in_use.len(), 2);
    let report = berth_images::snapshot::prune(&fx.store).unwrap();
    assert!(
        report.layers_removed.is_empty(),
        "pruned live layers: {:?}",
        report.layers_removed
    );
    assert!(layer_dirs.iter().all(|d| d.is_dir()));

    let rootfs = guard.0.take().unwrap();
    let path = rootfs.path().to_path_buf();
    rootfs.remove().unwrap();
    assert!(!mounted(&path), "still mounted after remove");
    assert!(!dir.exists(), "snapshot dir left behind");
    assert!(layers_in_use(&fx.store).unwrap().is_empty());
    let report = berth_images::snapshot::prune(&fx.store).unwrap();
    assert_eq!(report.layers_removed.len(), 2);
}

#[test]
fn many_layers_fit_the_mount() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let fx = Fixture::new();
    // 60 layers with the store under a long path: the lowerdir list is far past one page.
    let layers: Vec<Layer> = (0..60)
        .map(|i| Layer::gzip(&[Entry::file(&format!("f{i}"), format!("{i}").as_bytes())]))
        .collect();
    let image = fx.image("tall:latest", &layers);
    let dir = snapshots_dir(&fx.store).join("tall");
    let guard = SnapshotGuard(Some(
        prepare_rootfs(&fx.store, &image, &dir, &NoProgress).unwrap(),
    ));
    let rootfs = guard.0.as_ref().unwrap();
    assert_eq!(rootfs.kind(), RootfsKind::Overlay);
    assert_eq!(fs::read(rootfs.path().join("f0")).unwrap(), b"0");
    assert_eq!(fs::read(rootfs.path().join("f59")).unwrap(), b"59");
    let dirs =
        berth_images::unpack::ensure_layers(&fx.store, &image, &Default::default(), &NoProgress)
            .unwrap();
    let total: usize = dirs.iter().map(|d| d.as_os_str().len() + 1).sum();
    assert!(total > 4096, "the test must exceed a page ({total})");
}

#[test]
fn the_copy_fallback_gives_the_same_view() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let fx = Fixture::new();
    let image = fx.image("copy:latest", &layers());
    let dir = snapshots_dir(&fx.store).join("c2");
    let opts = SnapshotOptions {
        force_copy: true,
        ..SnapshotOptions::default()
    };
    let mut guard = SnapshotGuard(Some(
        prepare_rootfs_with(&fx.store, &image, &dir, &opts, &NoProgress).unwrap(),
    ));
    let rootfs = guard.0.as_ref().unwrap();
    assert_eq!(rootfs.kind(), RootfsKind::Copy);
    assert!(!mounted(rootfs.path()));
    check_view(rootfs.path());
    let reopened = Rootfs::open(&dir).unwrap();
    assert_eq!(reopened.kind(), RootfsKind::Copy);
    guard.0.take().unwrap().remove().unwrap();
    assert!(!dir.exists());
}

#[test]
fn a_busy_rootfs_is_detached_and_removed() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let fx = Fixture::new();
    let image = fx.image("busy:latest", &layers());
    let dir = snapshots_dir(&fx.store).join("c3");
    let mut guard = SnapshotGuard(Some(
        prepare_rootfs(&fx.store, &image, &dir, &NoProgress).unwrap(),
    ));
    let path = guard.0.as_ref().unwrap().path().to_path_buf();
    // An open directory inside the mount makes umount return EBUSY.
    let open = fs::File::open(path.join("etc")).unwrap();
    guard.0.take().unwrap().remove().unwrap();
    assert!(!mounted(&path));
    assert!(!dir.exists());
    drop(open);
}
