//! A Debian bookworm userland (debootstrap minbase plus python3-minimal), built once per
//! machine under /var/cache/berth-tests and shared by every test, and an image made from it.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

use crate::berth::Berth;
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

/// Builds an image named `tag` from the cached Debian root filesystem in `berth`'s store
/// (cmd /bin/bash); returns its manifest digest.
pub fn debian_image(berth: &Berth, tag: &str) -> String {
    build_image(berth, &debian_rootfs(), tag, "/bin/bash")
}
