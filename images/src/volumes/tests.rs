//! The volume store and the mount target rules, on a temporary data directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

fn req(source: MountSource, target: &str, origin: &str) -> MountRequest {
    MountRequest {
        source,
        target: PathBuf::from(target),
        read_only: false,
        origin: origin.to_string(),
    }
}

fn tmpfs() -> MountSource {
    MountSource::Tmpfs {
        size: None,
        mode: None,
    }
}

#[test]
fn names_follow_podmans_rule() {
    for good in ["a", "data", "Redis_1.0-x", "9lives"] {
        validate_name(good).unwrap();
    }
    for bad in [
        "",
        ".hidden",
        "-x",
        "_x",
        "a/b",
        "a b",
        "..",
        "é",
        &"a".repeat(256),
    ] {
        let err = validate_name(bad).unwrap_err();
        assert!(matches!(err, VolumeError::BadName(_)), "{bad:?}: {err}");
    }
}

#[test]
fn create_list_inspect_remove_and_prune() {
    let data = tempfile::tempdir().unwrap();
    let store = VolumeStore::open(data.path()).unwrap();
    let labels = BTreeMap::from([("app".to_string(), "db".to_string())]);
    let made = store.create("one", labels.clone()).unwrap();
    assert_eq!(made.mountpoint, data.path().join("volumes/one/_data"));
    assert!(made.mountpoint.is_dir());
    assert_eq!(made.labels, labels);
    let again = store.create("one", BTreeMap::new()).unwrap_err();
    assert!(matches!(again, VolumeError::AlreadyExists(_)), "{again}");
    store.create("two", BTreeMap::new()).unwrap();
    let names: Vec<String> = store.list().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["one", "two"]);

    store.attach("one", "ctr1", None).unwrap();
    assert_eq!(store.inspect("one").unwrap().in_use_by, ["ctr1"]);
    let err = store.remove("one", false).unwrap_err();
    assert!(err.to_string().contains("ctr1"), "{err}");
    assert_eq!(err.kind(), crate::ErrorKind::Conflict);
    assert_eq!(store.prune().unwrap(), ["two"]);
    store.release("ctr1").unwrap();
    store.remove("one", false).unwrap();
    let err = store.inspect("one").unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::NotFound);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn attach_creates_on_first_use_and_force_removes_in_use() {
    let data = tempfile::tempdir().unwrap();
    let store = VolumeStore::open(data.path()).unwrap();
    let dir = store.attach("auto", "c1", None).unwrap();
    std::fs::write(dir.join("f"), "kept").unwrap();
    let dir2 = store.attach("auto", "c2", None).unwrap();
    assert_eq!(std::fs::read_to_string(dir2.join("f")).unwrap(), "kept");
    assert_eq!(store.inspect("auto").unwrap().in_use_by, ["c1", "c2"]);
    store.remove("auto", true).unwrap();
    assert!(!dir.exists());
    assert!(store.attach("x", "../evil", None).is_err());
}

#[test]
fn concurrent_first_uses_make_one_volume() {
    let data = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let path = data.path().to_path_buf();
            std::thread::spawn(move || {
                let store = VolumeStore::open(&path).unwrap();
                store.attach("shared", &format!("c{i}"), None).unwrap()
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let store = VolumeStore::open(data.path()).unwrap();
    let all = store.list().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].in_use_by.len(), 8);
}

#[test]
fn targets_must_be_absolute_distinct_and_outside_proc_sys_dev() {
    let mut ok = vec![
        req(
            MountSource::Volume("a".into()),
            "/data/../srv/./x",
            "-v a:/srv/x",
        ),
        req(tmpfs(), "/tmp", "--tmpfs /tmp"),
    ];
    check_targets(&mut ok).unwrap();
    assert_eq!(ok[0].target, Path::new("/srv/x"));
    let cases: [(Vec<MountRequest>, &[&str]); 6] = [
        (
            vec![req(tmpfs(), "rel", "--tmpfs rel")],
            &["--tmpfs rel", "relative"],
        ),
        (vec![req(tmpfs(), "/", "--tmpfs /")], &["--tmpfs /", "root"]),
        (vec![req(tmpfs(), "/proc/x", "--tmpfs /proc/x")], &["/proc"]),
        (
            vec![req(tmpfs(), "/a/../dev", "--tmpfs /a/../dev")],
            &["/dev"],
        ),
        (
            vec![
                req(tmpfs(), "/d", "--tmpfs /d"),
                req(tmpfs(), "/d/", "-v x:/d/"),
            ],
            &["-v x:/d/", "overlaps", "--tmpfs /d"],
        ),
        (
            vec![
                req(tmpfs(), "/d", "--tmpfs /d"),
                req(tmpfs(), "/d/e", "--tmpfs /d/e"),
            ],
            &["/d/e", "overlaps"],
        ),
    ];
    for (mut requests, needles) in cases {
        let err = check_targets(&mut requests).unwrap_err().to_string();
        for needle in needles {
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }
    // A sibling sharing a prefix is not inside: /data and /database are fine.
    let mut siblings = vec![req(tmpfs(), "/data", "a"), req(tmpfs(), "/database", "b")];
    check_targets(&mut siblings).unwrap();
}

#[test]
fn bind_sources_must_exist_and_root_or_proc_need_privileged() {
    let r = req(MountSource::Bind("/".into()), "/h", "-v /:/h");
    let err = check_bind_source(&r, Path::new("/"), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("-v /:/h") && err.contains("--privileged"),
        "{err}"
    );
    check_bind_source(&r, Path::new("/"), true).unwrap();
    let err = check_bind_source(&r, Path::new("/proc/self"), false).unwrap_err();
    assert!(err.to_string().contains("--privileged"), "{err}");
    let err = check_bind_source(&r, Path::new("/no/such/berth/dir"), false).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn a_target_through_an_image_symlink_stays_in_the_rootfs() {
    let data = tempfile::tempdir().unwrap();
    let rootfs = data.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), "image passwd\n").unwrap();
    std::os::unix::fs::symlink("/etc", rootfs.join("data")).unwrap();
    std::os::unix::fs::symlink("../../../../../proc", rootfs.join("p")).unwrap();
    let store = VolumeStore::open(data.path()).unwrap();
    let vol = req(MountSource::Volume("v".into()), "/data", "-v v:/data");
    let mounts = oci_mounts(&store, &rootfs, "c1", &[vol], false).unwrap();
    assert_eq!(mounts[0].destination(), Path::new("/data"));
    // Seeded from the image's /etc, not the host's.
    let seeded = std::fs::read_to_string(store.mountpoint("v").join("passwd")).unwrap();
    assert_eq!(seeded, "image passwd\n");
    let via_link = req(tmpfs(), "/p", "--tmpfs /p");
    let err = oci_mounts(&store, &rootfs, "c1", &[via_link], false).unwrap_err();
    assert!(err.to_string().contains("under /proc"), "{err}");
    // /data and /etc/x are distinct paths but meet in the image.
    let both = [
        req(tmpfs(), "/data", "--tmpfs /data"),
        req(tmpfs(), "/etc/x", "--tmpfs /etc/x"),
    ];
    let err = oci_mounts(&store, &rootfs, "c1", &both, false).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("--tmpfs /etc/x") && text.contains("overlaps"),
        "{text}"
    );
}
