//! Library-level build tests: the layer tar's content and metadata, determinism, the config
//! built on a base image, whiteouts, and failures that leave nothing behind.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_images::build::{BuildError, BuildOptions, build};
use berth_images::progress::NoProgress;
use berth_images::{Image, Reference, Store};
use common::{Fixture, sha256_hex};

/// One tar entry as read back, with what the tests check.
#[derive(Debug, Clone)]
struct EntryRead {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    device: Option<(u32, u32)>,
    xattrs: BTreeMap<String, Vec<u8>>,
    content: Vec<u8>,
}

/// Decompresses a stored layer blob, checks its diff_id, and reads every entry.
fn read_layer(
    store: &Store,
    image: &Image,
    index: usize,
) -> (Vec<String>, BTreeMap<String, EntryRead>) {
    let layer = &image.manifest.layers()[index];
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(store.open_blob(layer.digest()).unwrap())
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let diff_id = format!("sha256:{}", sha256_hex(&tar_bytes));
    assert_eq!(
        image.config.rootfs().diff_ids()[index],
        diff_id,
        "diff_id is the sha256 of the tar"
    );
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut order = Vec::new();
    let mut entries = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let mut xattrs = BTreeMap::new();
        if let Some(extensions) = entry.pax_extensions().unwrap() {
            for ext in extensions {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
        let header = entry.header().clone();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        let device = match header.entry_type() {
            tar::EntryType::Char | tar::EntryType::Block => Some((
                header.device_major().unwrap().unwrap(),
                header.device_minor().unwrap().unwrap(),
            )),
            _ => None,
        };
        order.push(path.clone());
        entries.insert(
            path,
            EntryRead {
                kind: header.entry_type(),
                mode: header.mode().unwrap(),
                uid: header.uid().unwrap(),
                gid: header.gid().unwrap(),
                mtime: header.mtime().unwrap(),
                link: entry
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
                device,
                xattrs,
                content,
            },
        );
    }
    (order, entries)
}

fn set_mtime(path: &Path, seconds: u64) {
    File::open(path)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(seconds))
        .unwrap();
}

/// A tree with every kind of entry the builder handles.
fn rich_tree(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("dev")).unwrap();
    fs::write(root.join("bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    symlink("tool", root.join("bin/alias")).unwrap();
    fs::write(root.join("etc/motd"), b"hello\n").unwrap();
    fs::hard_link(root.join("etc/motd"), root.join("etc/motd.hard")).unwrap();
    lchown(root.join("etc/motd"), Some(1234), Some(5678)).unwrap();
    nix::unistd::mkfifo(
        &root.join("dev/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &root.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    xattr::set(root.join("bin/tool"), "user.berth.test", b"xattr-value").unwrap();
    let deep = root.join("deep").join("d".repeat(60)).join("e".repeat(60));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("long-file-name.txt"), b"deep").unwrap();
    for path in ["bin/tool", "etc/motd", "etc", "bin", "dev"] {
        set_mtime(&root.join(path), 1_600_000_000);
    }
}

/// A store, and a `rich_tree` beside it.
fn rich_fixture() -> (Fixture, PathBuf) {
    let fx = Fixture::new();
    let src = fx.path("src");
    rich_tree(&src);
    (fx, src)
}

fn options(dir: &Path, tag: &str) -> BuildOptions {
    let mut options = BuildOptions::new(dir, Reference::parse(tag).unwrap());
    options.created = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    options
}

#[test]
fn layer_holds_every_kind_of_entry_with_its_metadata() {
    let (fx, src) = rich_fixture();
    let store = &fx.store;
    let mut opts = options(&src, "rich:1");
    opts.whiteouts = vec!["/etc/gone".into(), "/var/cache/".into()];
    let image = build(store, &opts, &NoProgress).unwrap();
    assert_eq!(
        image.manifest.layers()[0].media_type().to_string(),
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let (order, entries) = read_layer(store, &image, 0);

    // Parents first, siblings by name, no "./" prefix, directories with a trailing slash.
    assert_eq!(order[0], "bin/");
    let position = |p: &str| {
        order
            .iter()
            .position(|o| o == p)
            .unwrap_or_else(|| panic!("{p} missing: {order:?}"))
    };
    assert!(
        position("bin/") < position("bin/alias") && position("bin/alias") < position("bin/tool")
    );
    assert!(
        position("etc/") < position("etc/.wh.gone")
            && position("etc/.wh.gone") < position("etc/motd")
    );

    let tool = &entries["bin/tool"];
    assert_eq!(tool.kind, tar::EntryType::Regular);
    assert_eq!(tool.mode, 0o4755);
    assert_eq!(tool.mtime, 1_600_000_000);
    assert_eq!(tool.content, b"#!/bin/sh\necho tool\n");
    assert_eq!(
        tool.xattrs.get("user.berth.test").map(Vec::as_slice),
        Some(&b"xattr-value"[..])
    );

    assert_eq!(entries["bin/alias"].kind, tar::EntryType::Symlink);
    assert_eq!(entries["bin/alias"].link.as_deref(), Some("tool"));

    let motd = &entries["etc/motd"];
    assert_eq!((motd.uid, motd.gid), (1234, 5678));
    let hard = &entries["etc/motd.hard"];
    assert_eq!(hard.kind, tar::EntryType::Link);
    assert_eq!(hard.link.as_deref(), Some("etc/motd"));
    assert!(hard.content.is_empty());

    assert_eq!(entries["dev/fifo"].kind, tar::EntryType::Fifo);
    assert_eq!(entries["dev/null"].kind, tar::EntryType::Char);
    assert_eq!(entries["dev/null"].device, Some((1, 3)));
    assert_eq!(entries["etc/"].mtime, 1_600_000_000);

    assert_eq!(entries["etc/.wh.gone"].kind, tar::EntryType::Regular);
    assert!(entries.contains_key("var/cache/.wh..wh..opq"));
    let long = format!(
        "deep/{}/{}/long-file-name.txt",
        "d".repeat(60),
        "e".repeat(60)
    );
    assert_eq!(
        entries[&long].content, b"deep",
        "paths over 100 bytes survive via PAX"
    );
}

#[test]
fn same_tree_gives_the_same_layer_and_same_time_the_same_image() {
    let (fx, src) = rich_fixture();
    let store_a = &fx.store;
    let store_b = Store::open(fx.path("b")).unwrap();
    let mut opts = options(&src, "same:1");
    opts.labels = (0..8)
        .map(|i| (format!("label{i}"), format!("v{i}")))
        .collect();
    opts.exposed_ports = vec!["80/tcp".into(), "53/udp".into(), "443/tcp".into()];
    let a = build(store_a, &opts, &NoProgress).unwrap();
    let b = build(&store_b, &opts, &NoProgress).unwrap();
    assert_eq!(
        a.manifest.layers()[0].digest(),
        b.manifest.layers()[0].digest()
    );
    assert_eq!(
        a.digest(),
        b.digest(),
        "same inputs and created time: same config and manifest"
    );

    opts.created = SystemTime::now();
    let c = build(&store_b, &opts, &NoProgress).unwrap();
    assert_eq!(
        a.manifest.layers()[0].digest(),
        c.manifest.layers()[0].digest()
    );
    assert_eq!(a.config.rootfs().diff_ids(), c.config.rootfs().diff_ids());
    assert_ne!(a.manifest.config().digest(), c.manifest.config().digest());
}

#[test]
fn image_on_a_base_adds_a_layer_and_merges_config() {
    let fx = Fixture::new();
    let store = &fx.store;
    let base_dir = fx.path("base");
    fs::create_dir_all(base_dir.join("etc")).unwrap();
    fs::write(base_dir.join("etc/motd"), b"base motd").unwrap();
    let mut base_opts = options(&base_dir, "base:1");
    base_opts.cmd = Some(vec!["/bin/sh".into()]);
    base_opts.env = vec![
        ("PATH".into(), "/bin".into()),
        ("KEEP".into(), "yes".into()),
    ];
    base_opts.workdir = Some("/".into());
    let base = build(store, &base_opts, &NoProgress).unwrap();

    let top_dir = fx.path("top");
    fs::create_dir_all(top_dir.join("app")).unwrap();
    fs::write(top_dir.join("app/run"), b"run").unwrap();
    let mut top_opts = options(&top_dir, "top:2");
    top_opts.base = Some("base:1".into());
    top_opts.env = vec![
        ("PATH".into(), "/app:/bin".into()),
        ("NEW".into(), "1".into()),
    ];
    top_opts.workdir = Some("/app".into());
    top_opts.user = Some("1000:1000".into());
    top_opts.whiteouts = vec!["/etc/motd".into()];
    let top = build(store, &top_opts, &NoProgress).unwrap();

    assert_eq!(top.manifest.layers().len(), 2);
    assert_eq!(top.manifest.layers()[0], base.manifest.layers()[0]);
    assert_eq!(top.config.rootfs().diff_ids().len(), 2);
    assert_eq!(
        top.config.rootfs().diff_ids()[0],
        base.config.rootfs().diff_ids()[0]
    );
    assert_eq!(top.config.history().as_ref().unwrap().len(), 2);
    let runtime = top.config.config().as_ref().unwrap();
    assert_eq!(
        runtime.cmd().as_deref(),
        Some(&["/bin/sh".to_string()][..]),
        "cmd inherited"
    );
    assert_eq!(
        runtime.env().as_deref().unwrap(),
        ["PATH=/app:/bin", "KEEP=yes", "NEW=1"],
        "env merged by key"
    );
    assert_eq!(runtime.working_dir().as_deref(), Some("/app"));
    assert_eq!(runtime.user().as_deref(), Some("1000:1000"));
    assert_eq!(
        top.config.created().as_deref(),
        Some("2023-11-14T22:13:20Z")
    );

    let (_, entries) = read_layer(store, &top, 1);
    assert!(entries.contains_key("etc/.wh.motd"));
    assert_eq!(entries["app/run"].content, b"run");

    // A new entrypoint drops the inherited cmd, as docker does.
    let mut ep_opts = options(&top_dir, "ep:1");
    ep_opts.base = Some("base:1".into());
    ep_opts.entrypoint = Some(vec!["/app/run".into()]);
    let ep = build(store, &ep_opts, &NoProgress).unwrap();
    let runtime = ep.config.config().as_ref().unwrap();
    assert_eq!(
        runtime.entrypoint().as_deref(),
        Some(&["/app/run".to_string()][..])
    );
    assert_eq!(runtime.cmd(), &None);
}

#[test]
fn failures_name_the_problem_and_leave_nothing() {
    let fx = Fixture::new();
    let store = &fx.store;
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();

    let mut opts = options(&src, "x:1");
    opts.base = Some("missing:1".into());
    let err = build(store, &opts, &NoProgress).unwrap_err();
    assert!(matches!(err, BuildError::Base { .. }), "{err}");
    assert!(err.to_string().contains("missing:1"), "{err}");

    let opts = options(&fx.path("nope"), "x:1");
    let err = build(store, &opts, &NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("nope") && err.to_string().contains("not a directory"),
        "{err}"
    );

    let mut opts = options(&src, "x:1");
    opts.whiteouts = vec!["/a/../b".into()];
    let err = build(store, &opts, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("--whiteout /a/../b"), "{err}");

    let mut opts = options(&src, "x:1");
    opts.whiteouts = vec!["/f".into()];
    fs::write(src.join(".wh.f"), b"").unwrap();
    let err = build(store, &opts, &NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("exists in the source directory"),
        "{err}"
    );

    let mut opts = options(&src, "x:1");
    opts.env = vec![("A=B".into(), "c".into())];
    let blobs_before = fx.blob_count();
    let err = build(store, &opts, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("--env A=B"), "{err}");
    let blobs_after = fx.blob_count();
    assert_eq!(
        blobs_before, blobs_after,
        "invalid options are refused before any blob is written"
    );

    assert!(store.list().unwrap().is_empty());
    let temp = fx.temp_files();
    assert!(temp.is_empty(), "temp files left: {temp:?}");
}
