//! A Debian bookworm userland, made by scripts/debian-base.sh (its one recipe: minbase plus
//! python3-minimal, curl, redis-server and python3-pyflakes with the full standard library) once per machine under /var/cache/berth-tests and shared by every
//! test, and an image made from it (also built once, as an OCI layout that tests import).

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

use crate::berth::{Berth, run_json, workspace_root};
use crate::busybox::build_image;
use crate::tools::{require_root, require_tool, run_ok};

/// The cache scripts/debian-base.sh keeps for the tests (`BERTH_DEBIAN_CACHE`): `rootfs/` and
/// the `stamp` it writes last, so a crashed build is never taken for a complete one. The `-2`
/// names the recipe with python3-pyflakes: checkouts on the older recipe keep their own tree
/// instead of rebuilding a shared one back and forth.
pub const DEBIAN_CACHE: &str = "/var/cache/berth-tests/debian-bookworm-2";

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
    let cache = PathBuf::from(DEBIAN_CACHE);
    let stamp = fs::read_to_string(cache.join("stamp")).expect("the rootfs stamp");
    let layout = cache.join("oci");
    let done = cache.join("oci-done");
    let lock_file = fs::File::create(cache.join("oci-lock")).expect("create the lock");
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
    let builder = Berth {
        data_dir: tempfile::Builder::new()
            .prefix("debian-image-")
            .tempdir_in(&cache)
            .expect("a temp store in the cache dir"),
    };
    build_image(&builder, &rootfs, LAYOUT_REF, "/bin/bash");
    fs::rename(builder.data_dir.path().join("images"), &layout)
        .expect("move the built layout into place");
    fs::write(&done, stamp).expect("write the layout's stamp");
    layout
}
