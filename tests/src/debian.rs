//! A Debian bookworm userland, made by scripts/debian-base.sh (its one recipe: minbase plus
//! python3-minimal and curl) once per machine under /var/cache/berth-tests and shared by every
//! test, and an image made from it.

use std::path::PathBuf;
use std::process::Command;

use crate::berth::{Berth, workspace_root};
use crate::busybox::build_image;
use crate::tools::{require_root, require_tool, run_ok};

/// The cache scripts/debian-base.sh keeps for the tests (`BERTH_DEBIAN_CACHE`): `rootfs/` and
/// the `stamp` it writes last, so a crashed build is never taken for a complete one.
pub const DEBIAN_CACHE: &str = "/var/cache/berth-tests/debian-bookworm";

/// `bash scripts/debian-base.sh ARGS` with the tests' shared cache, not yet run.
pub fn debian_base_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts/debian-base.sh"))
        .args(args)
        .env("BERTH_DEBIAN_CACHE", DEBIAN_CACHE);
    cmd
}

/// The cached Debian root filesystem, debootstrapped by the script first if no complete one
/// exists. The script holds a lock while it builds, so parallel tests wait for one build.
pub fn debian_rootfs() -> PathBuf {
    require_root();
    require_tool("debootstrap");
    let out = run_ok(&mut debian_base_cmd(&["--rootfs-only"]));
    let path = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("debian-base.sh --rootfs-only printed no path: {out}"));
    let rootfs = PathBuf::from(path);
    assert!(
        rootfs.join("usr/bin/python3").exists(),
        "debian-base.sh made {path} without python3: {out}"
    );
    rootfs
}

/// Builds an image named `tag` from the cached Debian root filesystem in `berth`'s store
/// (cmd /bin/bash); returns its manifest digest.
pub fn debian_image(berth: &Berth, tag: &str) -> String {
    build_image(berth, &debian_rootfs(), tag, "/bin/bash")
}
