//! Fixtures for the runtime's integration tests: a busybox bundle per test with its own state
//! root, container id and cgroup path (from the test name and pid), driving the built
//! `berth-runtime` binary, and cleaning up in Drop even when the test fails.
//!
//! Self-contained (not berth-tests, which pulls in the image store): the runtime depends on
//! nothing else of berth's, not even for its tests.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_berth-runtime");

/// One test's container: bundle, state root and names, removed on drop.
#[derive(Debug)]
pub(crate) struct TestContainer {
    pub id: String,
    /// The cgroupsPath given in config.json (absolute, one level, unique).
    pub cgroup: String,
    pub dir: tempfile::TempDir,
    pub config: Value,
}

impl TestContainer {
    /// A bundle with a busybox rootfs and the runtime's default spec running `args`.
    pub(crate) fn new(name: &str, args: &[&str]) -> Self {
        require_root();
        let id = format!("{name}-{}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-rt-{name}-"))
            .tempdir()
            .expect("temp dir");
        // World-traversable, so a user namespace's root (an unprivileged host uid) can reach
        // the rootfs.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir(&rootfs).unwrap();
        busybox_rootfs(&rootfs);
        let mut config = serde_json::to_value(berth_runtime::spec::default_spec()).unwrap();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        let cgroup = format!("/berth-test-{id}");
        config["linux"]["cgroupsPath"] = json!(cgroup);
        let container = TestContainer {
            id,
            cgroup,
            dir,
            config,
        };
        container.write_config();
        container
    }

    pub(crate) fn bundle(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub(crate) fn state_root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(crate) fn write_config(&self) {
        fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }

    /// `berth-runtime --root STATE ARGS...`, not yet run; stdin is null.
    pub(crate) fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(BIN);
        cmd.arg("--root").arg(self.state_root()).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    pub(crate) fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd(args).output().expect("run berth-runtime")
    }

    pub(crate) fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = self.output(args);
        assert!(out.status.success(), "berth-runtime failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn err<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = self.output(args);
        assert!(
            !out.status.success(),
            "berth-runtime should have failed: {out:?}"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `run` in the foreground: the container's output and exit status.
    pub(crate) fn run(&self) -> Output {
        self.output(
            ["run", "--bundle"]
                .iter()
                .map(Path::new)
                .chain([self.bundle(), Path::new(&self.id)]),
        )
    }

    /// `create` with the container's stdio going to files in the bundle (a pipe would keep
    /// the caller's read open for as long as the container lives).
    pub(crate) fn create(&self) -> Output {
        self.with_stdio_files(&["create"])
    }

    /// `SUBCOMMAND... --bundle B ID` with stdout/stderr going to files in the bundle.
    pub(crate) fn with_stdio_files(&self, subcommand: &[&str]) -> Output {
        let out = fs::File::create(self.bundle().join("stdout")).unwrap();
        let err = fs::File::create(self.bundle().join("stderr")).unwrap();
        let mut cmd = self.cmd(subcommand);
        cmd.arg("--bundle").arg(self.bundle()).arg(&self.id);
        cmd.stdout(out).stderr(err);
        cmd.output().expect("run berth-runtime")
    }

    pub(crate) fn create_ok(&self) {
        let out = self.create();
        assert!(
            out.status.success(),
            "create failed: {}",
            fs::read_to_string(self.bundle().join("stderr")).unwrap_or_default()
        );
    }

    pub(crate) fn container_stdout(&self) -> String {
        fs::read_to_string(self.bundle().join("stdout")).unwrap_or_default()
    }

    pub(crate) fn state(&self) -> Value {
        serde_json::from_str(&self.ok(["state", &self.id])).expect("state JSON")
    }

    pub(crate) fn status(&self) -> String {
        self.state()["status"].as_str().unwrap().to_string()
    }

    /// Polls `state` until the status is `want` (deadline 20 s).
    pub(crate) fn wait_status(&self, want: &str) {
        wait_until(&format!("{} to be {want}", self.id), || {
            self.status() == want
        });
    }

    /// The container's cgroup directory in the v1 hierarchy `controller`, or its one
    /// directory on a cgroup v2 host (where every controller shares it).
    pub(crate) fn cgroup_dir(&self, controller: &str) -> PathBuf {
        let root = Path::new("/sys/fs/cgroup");
        let rel = self.cgroup.trim_start_matches('/');
        if is_v2() {
            root.join(rel)
        } else {
            root.join(controller).join(rel)
        }
    }

    /// The trimmed contents of a cgroup file: `v1` (controller, file) on a v1 host, `v2` (a
    /// file of the unified directory) on a v2 host.
    pub(crate) fn cgroup_read(&self, v1: (&str, &str), v2: &str) -> String {
        let file = if is_v2() {
            self.cgroup_dir("").join(v2)
        } else {
            self.cgroup_dir(v1.0).join(v1.1)
        };
        fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
            .trim()
            .to_string()
    }

    /// Where the container's cgroup would be in every hierarchy of this host.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let root = Path::new("/sys/fs/cgroup");
        let rel = self.cgroup.trim_start_matches('/');
        if is_v2() {
            return vec![root.join(rel)];
        }
        fs::read_dir(root)
            .map(|d| d.flatten().map(|e| e.path().join(rel)).collect())
            .unwrap_or_default()
    }

    /// Every trace of the container the host could still hold.
    pub(crate) fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        if self.state_root().join(&self.id).exists() {
            left.push(format!(
                "state dir {}",
                self.state_root().join(&self.id).display()
            ));
        }
        for dir in self.cgroup_dirs() {
            if dir.exists() {
                left.push(format!("cgroup {}", dir.display()));
            }
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let bundle = self.bundle().display().to_string();
        left.extend(
            mountinfo
                .lines()
                .filter(|l| l.contains(&bundle))
                .map(|l| format!("mount {l}")),
        );
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(root) = fs::read_link(entry.path().join("root"))
                && root.starts_with(self.bundle())
            {
                left.push(format!(
                    "process {} rooted in the bundle",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
        left
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = self.cmd(["delete", "--force", &self.id]).output();
        // In case the runtime itself failed half-way: never leave a cgroup behind.
        for dir in self.cgroup_dirs() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Whether this host runs the unified cgroup v2 hierarchy at /sys/fs/cgroup (the guest of
/// tests/tests/guest_cgroup_v2.rs does; this project's own VM is v1 hybrid).
pub(crate) fn is_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Fails loudly unless on cgroup v2: the tests marked `#[ignore]` for v2 run in the guest.
pub(crate) fn require_v2() {
    assert!(
        is_v2(),
        "this test needs the unified cgroup v2 hierarchy: it runs in the guest of \
         tests/tests/guest_cgroup_v2.rs (cargo nextest run -p berth-tests --test guest_cgroup_v2)"
    );
}

/// Polls `cond` until it holds; panics naming `what` after 20 s. No fixed sleeps.
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Parses `key=value` lines printed by a container script.
pub(crate) fn kv(output: &str) -> std::collections::HashMap<String, String> {
    output
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Fails loudly unless running as root: these tests make namespaces, mounts and cgroups.
pub(crate) fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the runtime's integration tests need root"
    );
}

const APPLETS: &[&str] = &[
    "sh", "true", "false", "sleep", "echo", "cat", "ls", "ps", "hostname", "id", "env", "mkdir",
    "rm", "mount", "umount", "uname", "pwd", "printf", "test", "wc", "head", "grep", "touch",
    "kill", "seq", "tr", "dd", "stat", "cut",
];

/// A busybox root filesystem from Debian's static /bin/busybox (package busybox-static).
pub(crate) fn busybox_rootfs(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    for applet in APPLETS {
        symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    fs::write(dir.join("etc/hostname"), "busybox\n").unwrap();
}
