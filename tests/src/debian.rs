//! A Debian bookworm userland (debootstrap minbase plus python3-minimal), built once per
//! machine under /var/cache/berth-tests and shared by every test, and an image made from it
//! (also built once, as an OCI layout that tests import).

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

use crate::berth::{Berth, run_json};
use crate::busybox::build_image;
use crate::tools::{require_root, require_tool, run_ok};

/// Where the shared root filesystem lives; `.done` beside it marks a complete build.
pub const DEBIAN_CACHE: &str = "/var/cache/berth-tests/debian-bookworm-minbase-python3";

/// The cached Debian root filesystem, debootstrapped first if no complete one exists. An
/// exclusive lock on a file beside it makes parallel tests wait for one build instead of
/// racing; a half-made build (a crash) is removed and made again.
pub fn debian_rootfs() -> PathBuf {
    require_root();
    let dir = PathBuf::from(DEBIAN_CACHE);
    let done = dir.with_extension("done");
    let parent = dir.parent().expect("cache dir has a parent");
    fs::create_dir_all(parent).expect("create /var/cache/berth-tests");
    let lock_file = fs::File::create(dir.with_extension("lock")).expect("create the lock file");
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking {}: {e}", dir.display()));
    if done.exists() && dir.join("usr/bin/python3").exists() {
        return dir;
    }
    let debootstrap = require_tool("debootstrap");
    let partial = dir.with_extension("partial");
    for stale in [&partial, &dir] {
        if stale.exists() {
            fs::remove_dir_all(stale).unwrap_or_else(|e| panic!("removing {stale:?}: {e}"));
        }
    }
    run_ok(Command::new(debootstrap).args([
        "--variant=minbase",
        "--include=python3-minimal",
        "bookworm",
        partial.to_str().expect("utf-8 path"),
        "http://deb.debian.org/debian",
    ]));
    fs::rename(&partial, &dir).expect("move the finished root filesystem into place");
    fs::write(
        &done,
        "debootstrap --variant=minbase --include=python3-minimal bookworm\n",
    )
    .expect("write the stamp");
    dir
}

/// Puts the Debian image in `berth`'s store as `tag` (cmd /bin/bash); returns its manifest
/// digest. It is imported from [`debian_layout`]: seconds, where building it from the root
/// filesystem each time took a minute (gzip of 100 MB in a debug build).
pub fn debian_image(berth: &Berth, tag: &str) -> String {
    let imported = run_json(
        berth
            .import_cmd(&debian_layout())
            .args(["--ref", LAYOUT_REF, "--tag", tag]),
    );
    let image = imported
        .as_array()
        .and_then(|a| a.first())
        .unwrap_or(&imported);
    image["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("berth image import printed no digest: {imported}"))
        .to_string()
}

/// The name of the image in [`debian_layout`].
const LAYOUT_REF: &str = "debian:bookworm";

/// An OCI layout holding the image `berth image build` makes of [`debian_rootfs`], built once
/// per root filesystem (its stamp is copied beside the layout; a different one rebuilds it)
/// under the same kind of lock.
pub fn debian_layout() -> PathBuf {
    let rootfs = debian_rootfs();
    let stamp = fs::read_to_string(rootfs.with_extension("done")).expect("the rootfs stamp");
    let layout = rootfs.with_extension("oci");
    let done = rootfs.with_extension("oci-done");
    let lock_file = fs::File::create(rootfs.with_extension("oci-lock")).expect("create the lock");
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking {}: {e}", layout.display()));
    if fs::read_to_string(&done).is_ok_and(|s| s == stamp) && layout.join("index.json").exists() {
        return layout;
    }
    let _ = fs::remove_file(&done);
    if layout.exists() {
        fs::remove_dir_all(&layout).unwrap_or_else(|e| panic!("removing {layout:?}: {e}"));
    }
    // A store of its own beside the cache (same filesystem), whose image layout moves into place.
    let parent = rootfs.parent().expect("cache dir has a parent");
    let builder = Berth {
        data_dir: tempfile::Builder::new()
            .prefix("debian-image-")
            .tempdir_in(parent)
            .expect("a temp store in the cache dir"),
    };
    build_image(&builder, &rootfs, LAYOUT_REF, "/bin/bash");
    fs::rename(builder.data_dir.path().join("images"), &layout)
        .expect("move the built layout into place");
    fs::write(&done, stamp).expect("write the layout's stamp");
    layout
}
