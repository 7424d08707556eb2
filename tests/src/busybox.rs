//! A busybox root filesystem built from Debian's busybox-static, and a busybox image made
//! from it with `berth image build`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use crate::berth::{Berth, run_json};

/// PATH as the busybox images set it.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Applets linked to busybox in the fixture root filesystem.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "true", "false", "sleep", "echo", "cat", "ls", "ps", "hostname", "id", "env", "mkdir",
    "rm", "mount", "umount", "uname", "pwd", "printf", "test", "wc", "head", "tail", "grep", "sed",
    "sync", "touch", "ln", "stat", "find", "nc", "wget", "httpd", "kill", "chmod",
];

/// Writes a minimal busybox root filesystem into `dir` (which must exist): Debian's static
/// busybox, applet symlinks, /etc/passwd and /etc/group, and the usual empty directories.
pub fn busybox_rootfs(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: run scripts/setup.sh (installs busybox-static)"
    );
    for sub in [
        "bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var", "usr/bin",
    ] {
        fs::create_dir_all(dir.join(sub)).expect("create rootfs dir");
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    fs::copy(busybox, dir.join("bin/busybox")).expect("copy busybox");
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o755))
        .expect("chmod busybox");
    for applet in BUSYBOX_APPLETS {
        symlink("busybox", dir.join("bin").join(applet)).expect("applet symlink");
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("write passwd");
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("write group");
    fs::write(dir.join("etc/hostname"), "busybox\n").expect("write hostname");
}

/// Builds a busybox image named `tag` in `berth`'s store (from `busybox_rootfs`, with
/// `berth image build`): cmd `/bin/sh`, a PATH env, workdir `/`. Returns its manifest digest.
pub fn busybox_image(berth: &Berth, tag: &str) -> String {
    let rootfs = tempfile::Builder::new()
        .prefix("berth-busybox-rootfs-")
        .tempdir()
        .expect("create a temp rootfs dir");
    busybox_rootfs(rootfs.path());
    build_image(berth, rootfs.path(), tag, "/bin/sh")
}

/// `berth image build --from-dir rootfs --tag TAG --cmd CMD` with the busybox images' PATH and
/// workdir `/`; returns the manifest digest.
pub fn build_image(berth: &Berth, rootfs: &Path, tag: &str, cmd: &str) -> String {
    let built = run_json(berth.build_cmd(rootfs).args([
        "--tag",
        tag,
        "--cmd",
        cmd,
        "--env",
        PATH_ENV,
        "--workdir",
        "/",
    ]));
    built["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("berth image build printed no digest: {built}"))
        .to_string()
}
