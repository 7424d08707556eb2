//! Unpacking hostile and malformed layers, and the positive cases (whiteouts, links, devices,
//! metadata, compressions), through both `ensure_layers` and `unpack_flat`. Needs root.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use berth_images::progress::NoProgress;
use berth_images::unpack::{
    UnpackError, UnpackOptions, ensure_layers, layer_dir, unpack_flat, unpack_flat_report,
};
use common::raw_tar::{Entry, Layer};
use common::{Fixture, listing};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "unpack tests need root (run the suite as root)"
    );
}

fn opts() -> UnpackOptions {
    UnpackOptions::default()
}

/// Asserts the store holds no layer directory and no temp directory.
fn assert_no_layer_left(fx: &Fixture) {
    assert_eq!(
        fx.layer_dirs(),
        Vec::<String>::new(),
        "layer or temp dirs left behind"
    );
}

/// A flat unpack of `layers` that must fail: returns the error message after checking that the
/// destination (created by the unpack) is gone and the sentinel dir beside it is untouched.
fn flat_err(
    fx: &Fixture,
    name: &str,
    layers: &[Layer],
    opts: &UnpackOptions,
) -> (UnpackError, String) {
    let image = fx.image(name, layers);
    let sentinel = fx.path("sentinel");
    fs::create_dir_all(&sentinel).unwrap();
    let dest = fx.path("flat");
    let err =
        unpack_flat(&fx.store, &image, &dest, opts, &NoProgress).expect_err("unpack must fail");
    assert!(!dest.exists(), "failed unpack left {}", dest.display());
    assert_eq!(
        listing(&sentinel),
        Vec::<String>::new(),
        "something landed in the sentinel dir"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("image {name}")),
        "message lacks the image: {message}"
    );
    (err, message)
}

/// `ensure_layers` of `layers` that must fail, leaving no layer dir.
fn layers_err(fx: &Fixture, name: &str, layers: &[Layer], opts: &UnpackOptions) -> String {
    let image = fx.image(name, layers);
    let err =
        ensure_layers(&fx.store, &image, opts, &NoProgress).expect_err("ensure_layers must fail");
    assert_no_layer_left(fx);
    let message = err.to_string();
    assert!(
        message.contains(&format!("image {name}")),
        "message lacks the image: {message}"
    );
    message
}

#[test]
fn dotdot_and_absolute_paths_are_clamped_inside_the_root() {
    require_root();
    let fx = Fixture::new();
    let sentinel = fx.path("sentinel");
    fs::create_dir_all(&sentinel).unwrap();
    let layer = Layer::gzip(&[
        Entry::file("../../../sentinel/dotdot", b"1"),
        Entry::file("/sentinel/absolute", b"2"),
        Entry::file("a/../../../sentinel/mixed", b"3"),
        Entry::file(&format!("{}/abs-full", sentinel.display()), b"4"),
    ]);
    let image = fx.image("clamp:latest", &[layer]);
    let dest = fx.path("flat");
    unpack_flat(&fx.store, &image, &dest, &opts(), &NoProgress).unwrap();
    assert_eq!(fs::read(dest.join("sentinel/dotdot")).unwrap(), b"1");
    assert_eq!(fs::read(dest.join("sentinel/absolute")).unwrap(), b"2");
    assert_eq!(fs::read(dest.join("sentinel/mixed")).unwrap(), b"3");
    assert_eq!(
        fs::read(
            dest.join(sentinel.strip_prefix("/").unwrap())
                .join("abs-full")
        )
        .unwrap(),
        b"4"
    );
    assert_eq!(listing(&sentinel), Vec::<String>::new());
    let dirs = ensure_layers(&fx.store, &image, &opts(), &NoProgress).unwrap();
    assert_eq!(fs::read(dirs[0].join("sentinel/dotdot")).unwrap(), b"1");
    assert_eq!(listing(&sentinel), Vec::<String>::new());
    let mut names = fx.layer_dirs();
    names.sort();
    assert_eq!(names.len(), 1, "only the layer dir: {names:?}");
}

#[test]
fn writes_through_symlinks_pointing_outside_land_inside_the_root() {
    require_root();
    let fx = Fixture::new();
    let sentinel = fx.path("sentinel");
    fs::create_dir_all(&sentinel).unwrap();
    let host_target = sentinel.display().to_string();
    let layer = Layer::gzip(&[
        Entry::dir("etc"),
        Entry::symlink("abs", "/etc"),
        Entry::file("abs/passwd", b"root-in-container\n"),
        Entry::dir(&host_target[1..]),
        Entry::symlink("host", &host_target),
        Entry::file("host/pwned", b"x"),
        Entry::symlink("up", "../../.."),
        Entry::file("up/through-up", b"y"),
        Entry::dir("d"),
        Entry::symlink("d/rel", "../../../../../sentinel"),
        Entry::dir("sentinel"),
        Entry::file("d/rel/through-rel", b"z"),
    ]);
    let image = fx.image("symlinks:latest", &[layer]);
    let dest = fx.path("flat");
    unpack_flat(&fx.store, &image, &dest, &opts(), &NoProgress).unwrap();
    assert_eq!(
        fs::read(dest.join("etc/passwd")).unwrap(),
        b"root-in-container\n"
    );
    assert_ne!(fs::read("/etc/passwd").unwrap(), b"root-in-container\n");
    assert_eq!(
        fs::read(dest.join(&host_target[1..]).join("pwned")).unwrap(),
        b"x"
    );
    assert_eq!(fs::read(dest.join("through-up")).unwrap(), b"y");
    assert_eq!(fs::read(dest.join("sentinel/through-rel")).unwrap(), b"z");
    assert_eq!(fs::read_link(dest.join("abs")).unwrap(), Path::new("/etc"));
    assert_eq!(
        listing(&sentinel),
        Vec::<String>::new(),
        "wrote outside the root"
    );
    assert!(!fx.tmp.path().join("through-up").exists());
    let dirs = ensure_layers(&fx.store, &image, &opts(), &NoProgress).unwrap();
    assert_eq!(fs::read(dirs[0].join("through-up")).unwrap(), b"y");
    assert_eq!(
        listing(&sentinel),
        Vec::<String>::new(),
        "wrote outside the root"
    );
}

#[test]
fn writing_through_a_dangling_symlink_is_refused_inside_the_root() {
    require_root();
    let fx = Fixture::new();
    let layer = Layer::gzip(&[
        Entry::symlink("evil", "/nonexistent-dir"),
        Entry::file("evil/x", b"x"),
    ]);
    let digest = layer.digest();
    let (err, message) = flat_err(
        &fx,
        "dangling:latest",
        std::slice::from_ref(&layer),
        &opts(),
    );
    assert!(matches!(err, UnpackError::EntryIo { .. }), "{err:?}");
    assert!(
        message.contains(&digest) && message.contains("entry evil/x"),
        "{message}"
    );
    assert!(!Path::new("/nonexistent-dir").exists());
    let message = layers_err(&fx, "dangling:latest", &[layer], &opts());
    assert!(message.contains("entry evil/x"), "{message}");
}

#[test]
fn hard_links_to_paths_outside_are_refused() {
    require_root();
    let fx = Fixture::new();
    let secret = fx.path("sentinel/secret");
    fs::create_dir_all(secret.parent().unwrap()).unwrap();
    fs::write(&secret, b"secret").unwrap();
    for (i, target) in [
        "../sentinel/secret".to_string(),
        secret.display().to_string(),
    ]
    .iter()
    .enumerate()
    {
        let layer = Layer::gzip(&[Entry::file("ok", b"ok"), Entry::hardlink("stolen", target)]);
        let digest = layer.digest();
        let name = format!("hardlink{i}:latest");
        let image = fx.image(&name, std::slice::from_ref(&layer));
        let dest = fx.path("flat");
        let err =
            unpack_flat(&fx.store, &image, &dest, &opts(), &NoProgress).expect_err("must refuse");
        let message = err.to_string();
        assert!(matches!(err, UnpackError::UnsafeEntry { .. }), "{err:?}");
        assert!(
            message.contains(&format!("image {name}"))
                && message.contains(&digest)
                && message.contains("entry stolen"),
            "{message}"
        );
        assert!(!dest.exists());
        assert_eq!(
            fs::metadata(&secret).unwrap().nlink(),
            1,
            "linked to the host file"
        );
        let message = layers_err(&fx, &name, &[layer], &opts());
        assert!(message.contains("entry stolen"), "{message}");
        assert_eq!(
            fs::metadata(&secret).unwrap().nlink(),
            1,
            "linked to the host file"
        );
    }
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    require_root();
    let fx = Fixture::new();
    let layer = Layer::gzip(&[Entry::file("a", b"original")]);
    let digest = layer.digest();
    let image = fx.image("tampered:latest", &[layer]);
    // Replace the stored blob behind the store's back with other valid gzip.
    let blob = fx.store.blob_path(image.manifest.layers()[0].digest());
    fs::write(
        &blob,
        common::gzip(&common::raw_tar::tar(&[Entry::file("a", b"evil")])),
    )
    .unwrap();
    let dest = fx.path("flat");
    let err = unpack_flat(&fx.store, &image, &dest, &opts(), &NoProgress).expect_err("must fail");
    assert!(
        matches!(err, UnpackError::BlobDigestMismatch { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("image tampered:latest") && message.contains(&digest),
        "{message}"
    );
    assert!(!dest.exists());
    let err = ensure_layers(&fx.store, &image, &opts(), &NoProgress).expect_err("must fail");
    assert!(
        matches!(err, UnpackError::BlobDigestMismatch { .. }),
        "{err:?}"
    );
    assert_no_layer_left(&fx);
}

#[test]
fn a_diff_id_mismatch_is_refused() {
    require_root();
    let fx = Fixture::new();
    let mut layer = Layer::gzip(&[Entry::file("a", b"a")]);
    layer.diff_id = berth_images::digest::sha256_of(b"something else").to_string();
    let digest = layer.digest();
    let (err, message) = flat_err(&fx, "diffid:latest", std::slice::from_ref(&layer), &opts());
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err:?}");
    assert!(
        message.contains(&digest) && message.contains(&layer.diff_id),
        "{message}"
    );
    let message = layers_err(&fx, "diffid:latest", &[layer], &opts());
    assert!(message.contains("diff_id"), "{message}");
}

#[test]
fn a_truncated_gzip_stream_is_refused() {
    require_root();
    let fx = Fixture::new();
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
        .collect();
    let mut layer = Layer::gzip(&[Entry::file("big", &big), Entry::file("after", b"x")]);
    layer.blob.truncate(layer.blob.len() / 2);
    let digest = layer.digest();
    let (err, message) = flat_err(
        &fx,
        "truncated:latest",
        std::slice::from_ref(&layer),
        &opts(),
    );
    assert!(matches!(err, UnpackError::CorruptStream { .. }), "{err:?}");
    assert!(
        message.contains(&digest) && message.contains("gzip"),
        "{message}"
    );
    layers_err(&fx, "truncated:latest", &[layer], &opts());
}

#[test]
fn a_layer_past_the_size_limit_is_refused() {
    require_root();
    let fx = Fixture::new();
    let layer = Layer::gzip(&[Entry::file("zeros", &vec![0u8; 1 << 20])]);
    let digest = layer.digest();
    let small = UnpackOptions {
        max_layer_bytes: 64 << 10,
        ..UnpackOptions::default()
    };
    let (err, message) = flat_err(&fx, "bomb:latest", std::slice::from_ref(&layer), &small);
    assert!(
        matches!(err, UnpackError::SizeLimitExceeded { limit: 65536, .. }),
        "{err:?}"
    );
    assert!(message.contains(&digest), "{message}");
    layers_err(&fx, "bomb:latest", &[layer], &small);
}

#[test]
fn an_unknown_media_type_is_refused_by_name() {
    require_root();
    let fx = Fixture::new();
    let mut layer = Layer::gzip(&[Entry::file("a", b"a")]);
    layer.media_type = "application/vnd.example.layer+bz2";
    let (err, message) = flat_err(&fx, "media:latest", std::slice::from_ref(&layer), &opts());
    assert!(
        matches!(err, UnpackError::UnsupportedMediaType { .. }),
        "{err:?}"
    );
    assert!(
        message.contains("application/vnd.example.layer+bz2"),
        "{message}"
    );
    layers_err(&fx, "media:latest", &[layer], &opts());
}

#[test]
fn a_failing_upper_layer_removes_the_lower_layers_extracted_with_it() {
    require_root();
    let fx = Fixture::new();
    let good = Layer::gzip(&[Entry::file("a", b"a")]);
    let mut bad = Layer::gzip(&[Entry::file("b", b"b")]);
    bad.diff_id = berth_images::digest::sha256_of(b"wrong").to_string();
    let (_, flat) = flat_err(&fx, "partial:latest", &[good.clone(), bad.clone()], &opts());
    let layered = layers_err(&fx, "partial:latest", &[good, bad], &opts());
    for message in [flat, layered] {
        assert!(
            message.contains("diff_id"),
            "not blamed on the diff_id: {message}"
        );
    }
}

fn whiteout_layers() -> Vec<Layer> {
    vec![
        Layer::gzip(&[
            Entry::dir("a"),
            Entry::file("a/gone", b"1"),
            Entry::file("a/kept", b"2"),
            Entry::dir("b"),
            Entry::file("b/x", b"3"),
            Entry::dir("c"),
            Entry::file("c/old", b"4"),
            Entry::dir("d"),
            Entry::dir("d/e"),
            Entry::file("d/e/deep", b"5"),
        ]),
        Layer::gzip(&[
            Entry::dir("a"),
            Entry::file("a/.wh.gone", b""),
            Entry::file(".wh.b", b""),
            Entry::dir("c").mode(0o700),
            Entry::file("c/.wh..wh..opq", b""),
            Entry::file("c/new", b"6"),
            // A whiteout under a directory this layer has no header for.
            Entry::file("d/e/.wh.deep", b""),
        ]),
    ]
}

#[test]
fn whiteouts_become_overlay_markers_in_layer_dirs() {
    require_root();
    let fx = Fixture::new();
    let image = fx.image("wh:latest", &whiteout_layers());
    let dirs = ensure_layers(&fx.store, &image, &opts(), &NoProgress).unwrap();
    assert_eq!(dirs.len(), 2);
    let upper = &dirs[1];
    for hidden in ["a/gone", "b", "d/e/deep"] {
        let meta = fs::symlink_metadata(upper.join(hidden)).unwrap();
        assert!(
            meta.file_type().is_char_device() && meta.rdev() == 0,
            "{hidden} is not a 0/0 whiteout"
        );
    }
    assert_eq!(
        xattr::get(upper.join("c"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(
        xattr::get(upper.join("a"), "trusted.overlay.opaque")
            .unwrap()
            .is_none()
    );
    assert_eq!(fs::read(upper.join("c/new")).unwrap(), b"6");
    assert_eq!(fs::read(dirs[0].join("a/gone")).unwrap(), b"1");
    assert!(!upper.join("a/.wh.gone").exists());
    // Present layers are not extracted again.
    let before = fs::metadata(upper.join("c/new")).unwrap().ino();
    let again = ensure_layers(&fx.store, &image, &opts(), &NoProgress).unwrap();
    assert_eq!(again, dirs);
    assert_eq!(fs::metadata(upper.join("c/new")).unwrap().ino(), before);
    assert_eq!(
        dirs[1],
        layer_dir(
            &fx.store,
            image.config.rootfs().diff_ids()[1].trim_start_matches("sha256:")
        )
    );
}

#[test]
fn whiteouts_delete_lower_paths_in_a_flat_unpack() {
    require_root();
    let fx = Fixture::new();
    let image = fx.image("wh:latest", &whiteout_layers());
    let dest = fx.path("flat");
    let report = unpack_flat_report(&fx.store, &image, &dest, &opts(), &NoProgress).unwrap();
    assert_eq!(report.layers, 2);
    assert_eq!(
        listing(&dest),
        ["a", "a/kept", "c", "c/new", "d", "d/e"]
            .map(String::from)
            .to_vec(),
        "leftover staging or whited-out paths"
    );
    assert_eq!(
        fs::metadata(dest.join("c")).unwrap().mode() & 0o7777,
        0o700,
        "upper dir mode wins"
    );
    assert_eq!(fs::metadata(dest.join("a")).unwrap().mtime(), 1_600_000_000);
}

fn metadata_layer() -> Vec<Entry> {
    vec![
        Entry::dir("bin").mtime(1_500_000_000),
        Entry::file("bin/suid", b"#!/bin/true\n")
            .mode(0o4755)
            .owner(1000, 1001)
            .mtime(1_234_567_890),
        Entry::dir("tmp").mode(0o1777),
        Entry::symlink("bin/link", "suid")
            .owner(5, 6)
            .mtime(1_111_111_111),
        Entry::hardlink("bin/hard", "bin/suid"),
        Entry::dir("dev"),
        Entry::char_dev("dev/null", 1, 3).mode(0o666),
        Entry::fifo("dev/fifo").mode(0o620).owner(7, 8),
        Entry::file("xattrs", b"x")
            .xattr("user.berth", b"value")
            .xattr("trusted.berth", b"t"),
    ]
}

fn assert_metadata(root: &Path) {
    let suid = fs::metadata(root.join("bin/suid")).unwrap();
    assert_eq!(suid.mode() & 0o7777, 0o4755);
    assert_eq!((suid.uid(), suid.gid()), (1000, 1001));
    assert_eq!(suid.mtime(), 1_234_567_890);
    assert_eq!(suid.nlink(), 2);
    assert_eq!(
        fs::metadata(root.join("bin/hard")).unwrap().ino(),
        suid.ino()
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let link = fs::symlink_metadata(root.join("bin/link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(
        (link.uid(), link.gid(), link.mtime()),
        (5, 6, 1_111_111_111)
    );
    assert_eq!(
        fs::read_link(root.join("bin/link")).unwrap(),
        Path::new("suid")
    );
    let null = fs::metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (
            nix::sys::stat::major(null.rdev()),
            nix::sys::stat::minor(null.rdev())
        ),
        (1, 3)
    );
    assert_eq!(null.permissions().mode() & 0o7777, 0o666);
    let fifo = fs::metadata(root.join("dev/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(
        (fifo.mode() & 0o7777, fifo.uid(), fifo.gid()),
        (0o620, 7, 8)
    );
    assert_eq!(
        xattr::get(root.join("xattrs"), "user.berth")
            .unwrap()
            .as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(
        xattr::get(root.join("xattrs"), "trusted.berth")
            .unwrap()
            .as_deref(),
        Some(&b"t"[..])
    );
    assert_eq!(
        fs::metadata(root.join("bin")).unwrap().mtime(),
        1_500_000_000
    );
}

#[test]
fn owners_modes_links_devices_xattrs_and_mtimes_are_kept() {
    require_root();
    let fx = Fixture::new();
    let image = fx.image("meta:latest", &[Layer::gzip(&metadata_layer())]);
    let dest = fx.path("flat");
    unpack_flat(&fx.store, &image, &dest, &opts(), &NoProgress).unwrap();
    assert_metadata(&dest);
    let dirs = ensure_layers(&fx.store, &image, &opts(), &NoProgress).unwrap();
    assert_metadata(&dirs[0]);
}

#[test]
fn zstd_and_uncompressed_layers_unpack() {
    require_root();
    let fx = Fixture::new();
    let layers = [
        Layer::zstd(&[Entry::dir("z"), Entry::file("z/file", b"zstd")]),
        Layer::plain(&[Entry::dir("p"), Entry::file("p/file", b"plain")]),
        Layer::gzip(&[Entry::file("g", b"gzip")]),
    ];
    let image = fx.image("mixed:latest", &layers);
    let dest = fx.path("flat");
    unpack_flat(&fx.store, &image, &dest, &opts(), &NoProgress).unwrap();
    assert_eq!(fs::read(dest.join("z/file")).unwrap(), b"zstd");
    assert_eq!(fs::read(dest.join("p/file")).unwrap(), b"plain");
    assert_eq!(fs::read(dest.join("g")).unwrap(), b"gzip");
    let dirs = ensure_layers(&fx.store, &image, &opts(), &NoProgress).unwrap();
    assert_eq!(fs::read(dirs[0].join("z/file")).unwrap(), b"zstd");
    assert_eq!(fs::read(dirs[1].join("p/file")).unwrap(), b"plain");
}

#[test]
fn a_compression_that_contradicts_the_media_type_is_refused() {
    require_root();
    let fx = Fixture::new();
    let mut layer = Layer::zstd(&[Entry::file("a", b"a")]);
    layer.media_type = common::raw_tar::GZIP;
    let (err, _) = flat_err(&fx, "magic:latest", &[layer], &opts());
    assert!(matches!(err, UnpackError::CorruptStream { .. }), "{err:?}");
}

#[test]
fn hard_links_to_a_lower_layer_file_resolve_across_layers() {
    require_root();
    let fx = Fixture::new();
    let layers = [
        Layer::gzip(&[
            Entry::dir("data"),
            Entry::file("data/orig", b"lower").mode(0o640).owner(3, 4),
            Entry::file("data/gone", b"g"),
        ]),
        Layer::gzip(&[Entry::file("data/.wh.gone", b"")]),
        Layer::gzip(&[
            Entry::dir("other"),
            Entry::hardlink("other/link", "data/orig"),
        ]),
    ];
    let image = fx.image("xlink:latest", &layers);
    let dest = fx.path("flat");
    unpack_flat(&fx.store, &image, &dest, &opts(), &NoProgress).unwrap();
    let link = fs::metadata(dest.join("other/link")).unwrap();
    assert_eq!(fs::read(dest.join("other/link")).unwrap(), b"lower");
    assert_eq!(
        link.ino(),
        fs::metadata(dest.join("data/orig")).unwrap().ino()
    );
    assert_eq!(
        (link.mode() & 0o7777, link.uid(), link.gid()),
        (0o640, 3, 4)
    );
    let dirs = ensure_layers(&fx.store, &image, &opts(), &NoProgress).unwrap();
    assert_eq!(fs::read(dirs[2].join("other/link")).unwrap(), b"lower");

    // A link to a file that a middle layer deleted must not resolve.
    let fx = Fixture::new();
    let layers = [
        layers[0].clone(),
        layers[1].clone(),
        Layer::gzip(&[Entry::hardlink("link", "data/gone")]),
    ];
    let (err, message) = flat_err(&fx, "xlink-gone:latest", &layers, &opts());
    assert!(matches!(err, UnpackError::UnsafeEntry { .. }), "{err:?}");
    assert!(message.contains("entry link"), "{message}");
    layers_err(&fx, "xlink-gone:latest", &layers, &opts());
}

#[test]
fn an_upper_file_replaces_a_lower_directory_and_vice_versa() {
    require_root();
    let fx = Fixture::new();
    let layers = [
        Layer::gzip(&[
            Entry::dir("x"),
            Entry::file("x/inner", b"1"),
            Entry::file("y", b"file"),
        ]),
        Layer::gzip(&[
            Entry::file("x", b"now a file"),
            Entry::dir("y"),
            Entry::file("y/inner", b"2"),
        ]),
    ];
    let image = fx.image("replace:latest", &layers);
    let dest = fx.path("flat");
    unpack_flat(&fx.store, &image, &dest, &opts(), &NoProgress).unwrap();
    assert_eq!(fs::read(dest.join("x")).unwrap(), b"now a file");
    assert_eq!(fs::read(dest.join("y/inner")).unwrap(), b"2");
    assert_eq!(
        listing(&dest),
        ["x", "y", "y/inner"].map(String::from).to_vec()
    );
}

#[test]
fn a_non_empty_destination_is_refused() {
    require_root();
    let fx = Fixture::new();
    let image = fx.image("dest:latest", &[Layer::gzip(&[Entry::file("a", b"a")])]);
    let dest = fx.path("full");
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("keep"), b"mine").unwrap();
    let err = unpack_flat(&fx.store, &image, &dest, &opts(), &NoProgress).expect_err("must refuse");
    assert!(
        matches!(err, UnpackError::DestinationNotEmpty { .. }),
        "{err:?}"
    );
    assert_eq!(fs::read(dest.join("keep")).unwrap(), b"mine");
    // An empty existing directory is fine, and kept (emptied) on failure.
    let empty = fx.path("empty");
    fs::create_dir_all(&empty).unwrap();
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o755)).unwrap();
    unpack_flat(&fx.store, &image, &empty, &opts(), &NoProgress).unwrap();
    assert_eq!(fs::read(empty.join("a")).unwrap(), b"a");
}
