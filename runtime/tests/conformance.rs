//! Configs as other tools write them: Docker's pre-2020 seccomp allow-list (run by runc too,
//! on the same bundle), FIFOs in `linux.devices`, buildah's ambient capabilities; and init
//! failures, before and after `start`, reported by step and errno.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{TestContainer, kv};
use serde_json::{Value, json};

/// Docker 19.03's default profile as Docker resolved it into config.json for a container
/// with the default capabilities: an allow-list that predates close_range, clone3,
/// faccessat2, openat2, pidfd_open, epoll_pwait2 and rseq.
const DOCKER_2019_SECCOMP: &str = include_str!("fixtures/seccomp-docker-19.03.json");

/// Docker's default capabilities before 20.10 (the inheritable set included).
const DOCKER_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// runc's state for one test, its container deleted on drop.
struct Runc {
    root: PathBuf,
    id: String,
}

impl Runc {
    fn new(c: &TestContainer) -> Self {
        Runc {
            root: c.bundle().join("runc-state"),
            id: format!("{}-runc", c.id),
        }
    }

    /// `runc run` of the bundle in the foreground.
    fn run(&self, c: &TestContainer) -> Output {
        Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(["run", "--bundle"])
            .arg(c.bundle())
            .arg(&self.id)
            .stdin(Stdio::null())
            .output()
            .expect("runc is missing: apt-get install runc")
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", &self.id])
            .output();
    }
}

/// Prints hi, then the process's no_new_privs, seccomp mode and capability sets.
const STATUS_SCRIPT: &str =
    "echo hi; grep -E '^(NoNewPrivs|Seccomp|CapInh|CapPrm|CapEff|CapBnd):' /proc/self/status";

fn status_lines(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_2019_docker_allow_list_runs_as_under_runc() {
    let c = docker_2019("docker2019", &["sh", "-c", STATUS_SCRIPT]);
    let ours = c.run();
    assert!(ours.status.success(), "berth-runtime: {ours:?}");
    let runc = Runc::new(&c);
    let theirs = runc.run(&c);
    assert!(theirs.status.success(), "runc: {theirs:?}");
    let v = kv(&status_lines(&ours).replace(':', "="));
    assert_eq!(status_lines(&ours).lines().next(), Some("hi"), "{ours:?}");
    assert_eq!(v["Seccomp"], "2", "the filter is in: {ours:?}");
    assert_eq!(v["NoNewPrivs"], "0");
    // CAP_SYS_ADMIN (bit 21), held for the install, is gone again.
    let eff = u64::from_str_radix(&v["CapEff"], 16).unwrap();
    assert_eq!(eff & (1 << 21), 0, "{ours:?}");
    assert_eq!(
        status_lines(&ours),
        status_lines(&theirs),
        "berth-runtime and runc disagree"
    );
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

/// A bundle with the 2019 Docker profile, capabilities and no_new_privs off.
fn docker_2019(name: &str, args: &[&str]) -> TestContainer {
    let mut c = TestContainer::new(name, args);
    let profile: Value = serde_json::from_str(DOCKER_2019_SECCOMP).unwrap();
    c.config["linux"]["seccomp"] = profile;
    // Docker leaves no_new_privs off: the filter then needs CAP_SYS_ADMIN to go in, which
    // the process must not keep.
    c.config["process"]["noNewPrivileges"] = json!(false);
    c.config["process"]["capabilities"] = json!({
        "bounding": DOCKER_CAPS, "effective": DOCKER_CAPS,
        "inheritable": DOCKER_CAPS, "permitted": DOCKER_CAPS,
    });
    c.write_config();
    c
}

#[test]
fn exec_under_a_2019_docker_allow_list() {
    let c = docker_2019("docker2019-exec", &["sleep", "1000"]);
    let out = c.with_stdio_files(&["run", "--detach"]);
    assert!(out.status.success(), "{}", c.container_stdout());
    let out = c.output(["exec", &c.id, "sh", "-c", STATUS_SCRIPT]);
    assert!(out.status.success(), "{out:?}");
    let stdout = status_lines(&out);
    assert_eq!(stdout.lines().next(), Some("hi"), "{out:?}");
    let v = kv(&stdout.replace(':', "="));
    assert_eq!(v["Seccomp"], "2", "{stdout}");
    assert_eq!(v["NoNewPrivs"], "0", "{stdout}");
    assert_eq!(
        v["CapEff"], "00000000a80425fb",
        "Docker's 14 capabilities: {stdout}"
    );
    c.ok(["delete", "--force", &c.id]);
}

#[test]
fn an_init_failure_before_start_names_the_step_and_errno() {
    let mut c = TestContainer::new("initfail", &["true"]);
    // A soft limit above the hard one: setrlimit refuses it with EINVAL, whoever runs it.
    c.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}]);
    c.write_config();
    let out = c.run();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("setting rlimits") && stderr.contains("EINVAL"),
        "{stderr}"
    );
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn an_init_failure_after_start_names_the_step_and_errno() {
    let c = TestContainer::new("startfail", &["/bin/vanishing"]);
    fs::copy("/bin/busybox", c.rootfs().join("bin/vanishing")).unwrap();
    c.create_ok();
    // Gone between create (which found it) and start: the exec fails after the runtime left.
    fs::remove_file(c.rootfs().join("bin/vanishing")).unwrap();
    c.ok(["start", &c.id]);
    c.wait_status("stopped");
    let stderr = fs::read_to_string(c.bundle().join("stderr")).unwrap();
    assert!(
        stderr.contains("execve /bin/vanishing") && stderr.contains("ENOENT"),
        "{stderr:?}"
    );
    c.ok(["delete", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn a_failing_start_container_hook_is_reported_after_the_runtime_left() {
    let mut c = TestContainer::new("starthook", &["true"]);
    // Runs in the container after `start`: the runtime that created it is gone by then.
    c.config["hooks"] = json!({"startContainer": [{"path": "/bin/false", "args": ["false"]}]});
    c.write_config();
    c.create_ok();
    c.ok(["start", &c.id]);
    c.wait_status("stopped");
    let stderr = fs::read_to_string(c.bundle().join("stderr")).unwrap();
    assert!(
        stderr.contains("berth-runtime init: startContainer hook /bin/false"),
        "{stderr:?}"
    );
    c.ok(["delete", &c.id]);
}

#[test]
fn a_fifo_in_linux_devices_is_made_not_allowed_in_the_devices_cgroup() {
    let mut c = TestContainer::new(
        "fifo",
        &[
            "sh",
            "-c",
            "echo fifo=$(stat -c '%F %a %u' /dev/myfifo); (echo through > /dev/myfifo &); echo read=$(cat /dev/myfifo)",
        ],
    );
    c.config["linux"]["devices"] = json!([
        {"path": "/dev/myfifo", "type": "p", "major": 8, "minor": 666, "fileMode": 0o640, "uid": 0, "gid": 0}
    ]);
    c.write_config();
    let out = c.run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let v = kv(&stdout);
    assert_eq!(v["fifo"], "fifo 640 0", "{stdout}");
    assert_eq!(v["read"], "through", "{stdout}");
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn ambient_caps_outside_the_inheritable_set_are_warned_about_not_fatal() {
    let mut c = TestContainer::new(
        "ambient",
        &[
            "sh",
            "-c",
            "grep -E '^(CapAmb|CapEff):' /proc/self/status | tr ':' '='",
        ],
    );
    c.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    // buildah's shape: the ambient set lists capabilities the inheritable set lacks.
    c.config["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
        "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
        "inheritable": ["CAP_KILL"],
        "ambient": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
    });
    c.write_config();
    let log = c.bundle().join("runtime.log");
    let out = c.output(
        [
            "--log".as_ref(),
            log.as_os_str(),
            "run".as_ref(),
            "--bundle".as_ref(),
        ]
        .into_iter()
        .chain([c.bundle().as_os_str(), c.id.as_ref()]),
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = kv(&stdout);
    // Only CAP_KILL (bit 5) is both permitted and inheritable: it is raised, and as uid 1000
    // it is all the process keeps across the exec.
    assert_eq!(v["CapAmb"], "0000000000000020", "{stdout}");
    assert_eq!(v["CapEff"], "0000000000000020", "{stdout}");
    let log = fs::read_to_string(&log).unwrap();
    for cap in ["CAP_CHOWN", "CAP_NET_RAW"] {
        assert!(
            log.contains(&format!("can't raise ambient capability {cap}")),
            "{log}"
        );
    }
    assert!(!log.contains("CAP_KILL"), "{log}");
    // Without --log (buildah's way) stderr may be the user's terminal: nothing about them
    // there, as with runc; --debug shows them again.
    let quiet = c.run();
    assert!(quiet.status.success(), "{quiet:?}");
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "", "{quiet:?}");
    let debug = c.output(
        ["--debug", "run", "--bundle"]
            .map(std::ffi::OsStr::new)
            .into_iter()
            .chain([c.bundle().as_os_str(), c.id.as_ref()]),
    );
    assert!(
        String::from_utf8_lossy(&debug.stderr).contains("can't raise ambient capability CAP_CHOWN"),
        "{debug:?}"
    );
}

/// The mode of the file a bind mount left at `rel` in the bundle's rootfs, after `run`.
fn mount_point_mode(c: &TestContainer, rel: &str, run: impl FnOnce() -> Output) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let point = c.rootfs().join(rel);
    let _ = fs::remove_file(&point);
    let out = run();
    assert!(out.status.success(), "{out:?}");
    let mode = fs::metadata(&point).unwrap().permissions().mode() & 0o7777;
    fs::remove_file(&point).unwrap();
    mode
}

#[test]
fn a_missing_file_mount_point_is_made_as_runc_makes_it() {
    // buildah bind-mounts /etc/hosts and commits the empty mount point the runtime made:
    // with another mode than runc's, the same Containerfile builds another image.
    let mut c = TestContainer::new("mountpoint", &["cat", "/etc/made-hosts"]);
    let source = c.bundle().join("hosts-source");
    fs::write(&source, "127.0.0.1 localhost\n").unwrap();
    c.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/etc/made-hosts", "type": "bind",
        "source": source, "options": ["rbind", "ro"]
    }));
    c.write_config();
    let runc = Runc::new(&c);
    let theirs = mount_point_mode(&c, "etc/made-hosts", || runc.run(&c));
    let ours = mount_point_mode(&c, "etc/made-hosts", || c.run());
    assert_eq!(theirs, 0o755, "runc's mode");
    assert_eq!(ours, theirs, "berth-runtime's mode against runc's");
}
