//! podman (with conmon) drives berth-runtime through runc's command line: a matrix of podman
//! commands runs with berth-runtime and with crun as the reference, and every row's output
//! and exit code must match crun's. Each runtime gets its own podman root, removed on drop.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{binary, busybox_layout, poll_until, require_root, require_tool, skopeo_copy};

/// Options this machine needs (see the README): no systemd, so cgroupfs; no bridge network
/// (it would add iptables chains); root lacks CAP_SYS_RESOURCE, so rlimits within the hard ones.
const RUN_FLAGS: &[&str] = &[
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];
const IMAGE: &str = "localhost/berth-podman-busybox:latest";

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

/// podman with its own storage, for one runtime.
struct Podman {
    runtime: PathBuf,
    dir: tempfile::TempDir,
}

impl Podman {
    fn new(runtime: PathBuf, archive: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-podman-")
            .tempdir()
            .expect("temp dir");
        let p = Podman { runtime, dir };
        let out = p.run(&["load", "-q", "-i", archive.to_str().unwrap()], None);
        assert_eq!(out.1, 0, "podman load: {}", out.0);
        p
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("timeout");
        cmd.arg("120").arg(require_tool("podman"));
        cmd.arg("--root").arg(d.join("root"));
        cmd.arg("--runroot").arg(d.join("runroot"));
        cmd.arg("--tmpdir").arg(d.join("tmp"));
        cmd.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        cmd.arg("--runtime").arg(&self.runtime);
        cmd.args(args);
        cmd
    }

    /// stdout (normalised) and exit code; stderr is appended to stdout on failure for messages.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (String, i32) {
        let mut cmd = self.cmd(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn podman");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out: Output = child.wait_with_output().expect("podman");
        (
            normalise(&String::from_utf8_lossy(&out.stdout)),
            out.status.code().unwrap_or(-1),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let mut cmd = self.cmd(args);
        let out = cmd.stdin(Stdio::null()).output().expect("podman");
        assert!(out.status.success(), "podman {args:?}: {out:?}");
        normalise(&String::from_utf8_lossy(&out.stdout))
    }

    /// `podman ARGS` under `script`, so it has a real terminal; `input` is typed into it.
    fn under_script(&self, args: &[&str], input: &str) -> (String, i32) {
        // `timeout` must stay in the terminal's foreground process group: in its own group
        // (its default) podman's tcsetattr on the pty stops it with SIGTTOU.
        let line: Vec<String> = ["timeout".to_string(), "--foreground".to_string()]
            .into_iter()
            .chain(self.cmd(args).get_args().map(|a| {
                let s = a.to_string_lossy();
                format!("'{}'", s.replace('\'', "'\\''"))
            }))
            .collect();
        let mut cmd = Command::new(require_tool("script"));
        cmd.args(["-qec", &line.join(" "), "/dev/null"]);
        // script runs the line with $SHELL: pin it so CI (often without SHELL) and a login
        // shell behave alike.
        cmd.env("SHELL", "/bin/sh");
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("script");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().expect("script");
        // The typed line comes back as terminal echo, from script's pty and the container's,
        // at moments that race with the program's own output: compare without the echoes.
        let typed: Vec<&str> = input.lines().collect();
        let shown: String = normalise(&String::from_utf8_lossy(&out.stdout))
            .lines()
            .filter(|line| !typed.contains(line))
            .map(|line| format!("{line}\n"))
            .collect();
        (shown, out.status.code().unwrap_or(-1))
    }

    fn status(&self, id: &str) -> String {
        self.ok(&["inspect", "-f", "{{.State.Status}}", id])
            .trim()
            .to_string()
    }

    fn wait_status(&self, id: &str, want: &str) {
        poll_until(
            &format!("{id} to become {want}"),
            Duration::from_secs(60),
            || (self.status(id) == want).then_some(()),
        );
    }

    /// The host file `name` of the container's cgroup in `controller`.
    fn cgroup_file(&self, id: &str, controller: &str, name: &str) -> String {
        let pid = self.ok(&["inspect", "-f", "{{.State.Pid}}", id]);
        let cgroups = fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap();
        let rel = cgroups
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, c, p) = (parts.next()?, parts.next()?, parts.next()?);
                c.split(',').any(|c| c == controller).then(|| p.to_string())
            })
            .expect("controller in /proc/PID/cgroup");
        let path = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(rel.trim_start_matches('/'))
            .join(name);
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-af", "-t", "0"]).output();
        let _ = self.cmd(&["rmi", "-af"]).output();
        // Unmounts the storage (overlay) and forgets everything under this root.
        let _ = self.cmd(&["system", "reset", "-f"]).output();
        // podman's empty parents, shared by every container: only removed when empty.
        if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let parent = e.path().join("libpod_parent");
                let _ = fs::remove_dir(parent.join("conmon"));
                let _ = fs::remove_dir(parent);
            }
        }
    }
}

fn normalise(text: &str) -> String {
    let text = text.replace(['\r', '\0'], "");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("/dev/pts/") {
        out.push_str(&rest[..i + 9]);
        rest = rest[i + 9..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out.push_str(rest);
    out
}

/// Runs the matrix with one runtime: (row, output, exit code) per row.
fn matrix(p: &Podman) -> Vec<(&'static str, String, i32)> {
    let mut rows = Vec::new();
    let run = |extra: &[&str], cmd: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend(RUN_FLAGS);
        args.extend(extra);
        args.push(IMAGE);
        args.extend(cmd);
        p.run(&args, None)
    };
    let (o, c) = run(&[], &["sh", "-c", "echo hello; exit 3"]);
    rows.push(("run --rm", o, c));

    let mut args = vec!["run", "-it", "--rm"];
    args.extend(RUN_FLAGS);
    args.extend([IMAGE, "sh", "-c", "tty; read x; echo typed-$x"]);
    let (o, c) = p.under_script(&args, "abc\n");
    rows.push(("run -it", o, c));

    let mut args = vec!["run", "-d"];
    args.extend(RUN_FLAGS);
    args.extend([
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        IMAGE,
        "sh",
        "-c",
        "echo logged; trap 'exit 5' TERM; while :; do sleep 1; done",
    ]);
    let id = p.ok(&args).trim().to_string();
    let logs = poll_until(
        "the detached container's log",
        Duration::from_secs(60),
        || Some(p.ok(&["logs", &id])).filter(|logs| logs.contains("logged")),
    );
    rows.push(("run -d + logs", logs, 0));
    rows.push((
        "--memory 64m",
        p.cgroup_file(&id, "memory", "memory.limit_in_bytes"),
        0,
    ));
    rows.push((
        "--cpus 0.5",
        p.cgroup_file(&id, "cpu", "cpu.cfs_quota_us"),
        0,
    ));
    rows.push(("--pids-limit 50", p.cgroup_file(&id, "pids", "pids.max"), 0));
    let (o, c) = p.run(&["exec", &id, "sh", "-c", "echo in-exec; exit 4"], None);
    rows.push(("exec", o, c));
    let (o, c) = p.under_script(
        &["exec", "-it", &id, "sh", "-c", "tty; read x; echo typed-$x"],
        "xyz\n",
    );
    rows.push(("exec -it", o, c));
    let top = p.ok(&["top", &id, "args"]);
    rows.push((
        "top",
        top.lines().filter(|l| l.contains("trap")).collect(),
        0,
    ));
    p.ok(&["pause", &id]);
    rows.push(("pause", p.status(&id), 0));
    p.ok(&["unpause", &id]);
    rows.push(("unpause", p.status(&id), 0));
    p.ok(&["stop", "-t", "30", &id]);
    p.wait_status(&id, "exited");
    rows.push((
        "stop",
        p.ok(&["inspect", "-f", "{{.State.ExitCode}}", &id]),
        0,
    ));
    p.ok(&["rm", &id]);

    let mut args = vec!["run", "-d"];
    args.extend(RUN_FLAGS);
    args.extend([IMAGE, "sleep", "600"]);
    let id = p.ok(&args).trim().to_string();
    p.ok(&["kill", &id]);
    p.wait_status(&id, "exited");
    rows.push((
        "kill",
        p.ok(&["inspect", "-f", "{{.State.ExitCode}}", &id]),
        0,
    ));
    p.ok(&["rm", &id]);
    let id = p.ok(&args).trim().to_string();
    let (o, c) = p.run(&["rm", "-f", "-t", "0", &id], None);
    rows.push(("rm -f", o.replace(&id, "ID"), c));
    rows.push(("rm -f gone", p.ok(&["ps", "-aq"]), 0));

    let (o, c) = run(&["--read-only"], &["sh", "-c", "touch /x 2>&1"]);
    rows.push(("--read-only", o, c));
    let (o, c) = run(&["--cap-drop", "CHOWN"], &["sh", "-c", "chown 1 /tmp 2>&1"]);
    rows.push(("--cap-drop CHOWN", o, c));
    let (o, c) = run(&["--user", "65534"], &["id", "-u"]);
    rows.push(("--user 65534", o, c));
    rows
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

    let reference = matrix(&Podman::new(crun, &archive));
    let ours = matrix(&Podman::new(berth, &archive));
    for (want, got) in reference.iter().zip(&ours) {
        assert_eq!(
            want, got,
            "row {:?}: berth-runtime differs from crun",
            want.0
        );
    }
    assert_eq!(reference.len(), ours.len());

    // The rows check what they are about, not only that both runtimes agree.
    let row = |name: &str| ours.iter().find(|r| r.0 == name).unwrap();
    assert_eq!(row("run --rm"), &("run --rm", "hello\n".into(), 3));
    assert!(row("run -it").1.contains("/dev/pts/N") && row("run -it").1.contains("typed-abc"));
    assert!(row("exec -it").1.contains("/dev/pts/N") && row("exec -it").1.contains("typed-xyz"));
    assert_eq!(row("exec").2, 4);
    assert_eq!(row("run -d + logs").1, "logged\n");
    assert_eq!(row("--memory 64m").1, "67108864");
    assert_eq!(row("--cpus 0.5").1, "50000");
    assert_eq!(row("--pids-limit 50").1, "50");
    assert!(!row("top").1.is_empty());
    assert_eq!(row("pause").1, "paused");
    assert_eq!(row("unpause").1, "running");
    assert_eq!(row("stop").1.trim(), "5");
    assert_eq!(row("kill").1.trim(), "137");
    assert_eq!(row("rm -f gone").1, "");
    assert!(row("--read-only").1.contains("Read-only file system"));
    assert_ne!(row("--cap-drop CHOWN").2, 0);
    assert_eq!(row("--user 65534").1, "65534\n");
}
