//! podman (with conmon) drives berth-runtime through runc's command line: a matrix of podman
//! commands (berth_tests::podman_matrix, shared with the systemd guest's test) runs with
//! berth-runtime and with crun as the reference, and every row's output and exit code must
//! match crun's. Each runtime gets its own podman root, removed on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::podman_matrix::{IMAGE, Podman, Setup, assert_same, matrix, row};
use berth_tests::{binary, busybox_layout, require_root, require_tool, skopeo_copy};

/// crun refuses the hybrid layout while controllers (hugetlb here) sit on cgroup2: this guard
/// mounts them as v1 hierarchies and puts them back on drop, even when the test fails. An
/// exclusive lock on one file makes tests in other processes wait for each other.
struct HybridFix {
    _lock: fs::File,
    mounted: Vec<PathBuf>,
}

impl HybridFix {
    fn new() -> Self {
        let lock = fs::File::create("/tmp/berth-tests-podman.lock").expect("lock file");
        lock.lock().expect("flock");
        let mut fix = HybridFix {
            _lock: lock,
            mounted: Vec::new(),
        };
        let controllers =
            fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").unwrap_or_default();
        for c in controllers.split_whitespace() {
            let dir = Path::new("/sys/fs/cgroup").join(c);
            fs::create_dir_all(&dir).expect("mount point");
            fix.mounted.push(dir.clone());
            let out = Command::new("mount")
                .args(["-t", "cgroup", "-o", c, "cgroup"])
                .arg(&dir)
                .output()
                .expect("mount");
            assert!(out.status.success(), "mount {c}: {out:?}");
        }
        fix
    }
}

/// Removes every cgroup under `dir`, deepest first.
fn remove_cgroups_below(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroups_below(&e.path());
                let _ = fs::remove_dir(e.path());
            }
        }
    }
}

impl Drop for HybridFix {
    fn drop(&mut self) {
        for dir in &self.mounted {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            // The kernel can keep an unmounted hierarchy alive after container churn; a
            // second mount + umount releases it (as benches/lifecycle.sh does).
            for _ in 0..3 {
                // A hierarchy with child cgroups would linger after the unmount.
                remove_cgroups_below(dir);
                let _ = Command::new("umount").arg(dir).status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while !back_on_cgroup2(&name) && Instant::now() < deadline {
                    std::thread::yield_now();
                }
                if back_on_cgroup2(&name) {
                    break;
                }
                let _ = Command::new("mount")
                    .args(["-t", "cgroup", "-o", &name, "cgroup"])
                    .arg(dir)
                    .status();
            }
            let _ = fs::remove_dir(dir);
            if !back_on_cgroup2(&name) {
                eprintln!("WARNING: {name} is not back on cgroup2; see /proc/cgroups");
            }
        }
    }
}

fn back_on_cgroup2(controller: &str) -> bool {
    fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|s| s.split_whitespace().any(|c| c == controller))
}

#[test]
fn podman_drives_berth_runtime_as_it_drives_crun() {
    require_root();
    require_tool("podman");
    require_tool("conmon");
    let crun = require_tool("crun");
    let berth = binary("berth-runtime");
    let _fix = HybridFix::new();

    let work = tempfile::Builder::new()
        .prefix("berth-podman-image-")
        .tempdir()
        .unwrap();
    let image = busybox_layout(work.path(), "latest");
    let archive = work.path().join("busybox.tar");
    skopeo_copy(
        &image.skopeo_ref(),
        &format!("oci-archive:{}:{IMAGE}", archive.display()),
        &[],
    );

    let reference = matrix(&Podman::new(crun, &archive, Setup::this_host()));
    let ours = matrix(&Podman::new(berth, &archive, Setup::this_host()));
    assert_same(&reference, &ours, "berth-runtime");

    // The rows check what they are about, not only that both runtimes agree.
    let row = |name: &str| {
        let (_, output, code) = row(&ours, name);
        (output.as_str(), *code)
    };
    assert_eq!(row("run --rm"), ("hello\n", 3));
    assert!(row("run -it").0.contains("/dev/pts/N") && row("run -it").0.contains("typed-abc"));
    assert!(row("exec -it").0.contains("/dev/pts/N") && row("exec -it").0.contains("typed-xyz"));
    assert_eq!(row("exec").1, 4);
    assert_eq!(row("run -d + logs").0, "logged\n");
    assert_eq!(row("--memory 64m").0, "67108864");
    assert_eq!(row("--cpus 0.5").0, "50000");
    assert_eq!(row("--pids-limit 50").0, "50");
    assert!(!row("top").0.is_empty());
    assert_eq!(row("pause").0, "paused");
    assert_eq!(row("unpause").0, "running");
    assert_eq!(row("stop").0.trim(), "5");
    assert_eq!(row("kill").0.trim(), "137");
    assert_eq!(row("rm -f gone").0, "");
    assert!(row("--read-only").0.contains("Read-only file system"));
    assert_ne!(row("--cap-drop CHOWN").1, 0);
    assert_eq!(row("--user 65534").0, "65534\n");
}
