//! The podman row matrix: podman (with conmon) runs the same commands with one OCI runtime
//! and records each row's output and exit code, so that two runtimes can be compared row by
//! row. Shared by tests/tests/podman.rs on this host (cgroup v1, cgroupfs) and by the
//! `berth-podman-matrix` binary inside the systemd guest (cgroup v2, podman's defaults).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{poll_until, require_tool};

/// The image every row runs, loaded from an OCI archive of busybox.
pub const IMAGE: &str = "localhost/berth-podman-busybox:latest";

/// One row: its name, the normalised output and the exit code.
pub type Row = (String, String, i32);

/// How podman runs: the cgroup manager (`None`: podman's default, systemd where systemd is
/// PID 1) and the flags every `run` gets.
#[derive(Debug, Clone)]
pub struct Setup {
    pub cgroup_manager: Option<String>,
    pub run_flags: Vec<String>,
}

impl Setup {
    /// This host: no systemd, so cgroupfs; no bridge network (it would add iptables chains);
    /// root lacks CAP_SYS_RESOURCE, so rlimits within the hard ones (NOTES.md).
    pub fn this_host() -> Self {
        Setup {
            cgroup_manager: Some("cgroupfs".into()),
            run_flags: [
                "--network",
                "none",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    /// podman's defaults (the systemd guest); only the network is off.
    pub fn defaults() -> Self {
        Setup {
            cgroup_manager: None,
            run_flags: vec!["--network".into(), "none".into()],
        }
    }

    fn systemd(&self) -> bool {
        self.cgroup_manager.is_none() && Path::new("/run/systemd/system").is_dir()
    }
}

/// podman with its own storage, for one runtime; everything is removed on drop.
#[derive(Debug)]
pub struct Podman {
    runtime: PathBuf,
    setup: Setup,
    dir: tempfile::TempDir,
}

impl Podman {
    /// A podman root for `runtime` with the image of `archive` loaded.
    pub fn new(runtime: PathBuf, archive: &Path, setup: Setup) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-podman-")
            .tempdir()
            .expect("temp dir");
        let p = Podman {
            runtime,
            setup,
            dir,
        };
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
        if let Some(manager) = &self.setup.cgroup_manager {
            cmd.args(["--cgroup-manager", manager]);
        }
        cmd.args(["--events-backend", "file"]);
        cmd.arg("--runtime").arg(&self.runtime);
        cmd.args(args);
        cmd
    }

    /// stdout (normalised) and exit code.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> (String, i32) {
        let mut cmd = self.cmd(args);
        let out: Output = match stdin {
            Some(text) => crate::output_with_stdin(&mut cmd, text.as_bytes()),
            None => crate::output(cmd.stdin(Stdio::null())),
        };
        (
            normalise(&String::from_utf8_lossy(&out.stdout)),
            out.status.code().unwrap_or(-1),
        )
    }

    /// stdout of a podman command that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
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

    /// The host directory of the container's cgroup: in the v1 hierarchy `controller`, or in
    /// the unified one.
    fn cgroup_dir(&self, id: &str, controller: &str) -> PathBuf {
        let pid = self.ok(&["inspect", "-f", "{{.State.Pid}}", id]);
        let cgroups = fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap();
        // `ID:CONTROLLERS:PATH`; the unified entry has no controllers (on a hybrid host it is
        // there too, so a v1 entry for `controller` comes first).
        let entries: Vec<(&str, &str)> = cgroups
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, c, p) = (parts.next()?, parts.next()?, parts.next()?);
                Some((c, p))
            })
            .collect();
        let (v1, rel) = entries
            .iter()
            .find(|(c, _)| c.split(',').any(|c| c == controller))
            .map(|(_, p)| (true, p.to_string()))
            .or_else(|| {
                let unified = entries.iter().find(|(c, _)| c.is_empty())?;
                Some((false, unified.1.to_string()))
            })
            .expect("controller in /proc/PID/cgroup");
        let root = Path::new("/sys/fs/cgroup");
        let root = if v1 {
            root.join(controller)
        } else {
            root.into()
        };
        root.join(rel.trim_start_matches('/'))
    }

    /// The file `v1` (cgroup v1) or `v2` of the container's cgroup in `controller`.
    fn cgroup_file(&self, id: &str, controller: &str, (v1, v2): (&str, &str)) -> String {
        let dir = self.cgroup_dir(id, controller);
        let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let path = dir.join(if unified { v2 } else { v1 });
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
        // podman's empty cgroupfs parents, shared by every container: only removed when empty.
        if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let parent = e.path().join("libpod_parent");
                let _ = fs::remove_dir(parent.join("conmon"));
                let _ = fs::remove_dir(parent);
            }
        }
    }
}

/// Output with pty numbers and carriage returns taken out (they differ between runs).
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
pub fn matrix(p: &Podman) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut push = |name: &str, out: String, code: i32| rows.push((name.into(), out, code));
    let flags: Vec<&str> = p.setup.run_flags.iter().map(String::as_str).collect();
    let run = |extra: &[&str], cmd: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend(&flags);
        args.extend(extra);
        args.push(IMAGE);
        args.extend(cmd);
        p.run(&args, None)
    };
    let (o, c) = run(&[], &["sh", "-c", "echo hello; exit 3"]);
    push("run --rm", o, c);

    let mut args = vec!["run", "-it", "--rm"];
    args.extend(&flags);
    args.extend([IMAGE, "sh", "-c", "tty; read x; echo typed-$x"]);
    let (o, c) = p.under_script(&args, "abc\n");
    push("run -it", o, c);

    detached_rows(p, &flags, &mut push);

    let mut args = vec!["run", "-d"];
    args.extend(&flags);
    args.extend([IMAGE, "sleep", "600"]);
    let id = p.ok(&args).trim().to_string();
    p.ok(&["kill", &id]);
    p.wait_status(&id, "exited");
    push(
        "kill",
        p.ok(&["inspect", "-f", "{{.State.ExitCode}}", &id]),
        0,
    );
    p.ok(&["rm", &id]);
    let id = p.ok(&args).trim().to_string();
    let (o, c) = p.run(&["rm", "-f", "-t", "0", &id], None);
    push("rm -f", o.replace(&id, "ID"), c);
    push("rm -f gone", p.ok(&["ps", "-aq"]), 0);

    let (o, c) = run(&["--read-only"], &["sh", "-c", "touch /x 2>&1"]);
    push("--read-only", o, c);
    let (o, c) = run(&["--cap-drop", "CHOWN"], &["sh", "-c", "chown 1 /tmp 2>&1"]);
    push("--cap-drop CHOWN", o, c);
    let (o, c) = run(&["--user", "65534"], &["id", "-u"]);
    push("--user 65534", o, c);
    rows
}

/// The rows of one detached container with limits: logs, the limits in its cgroup (and,
/// under systemd, its scope), exec, top, pause/unpause and stop.
fn detached_rows(p: &Podman, flags: &[&str], push: &mut impl FnMut(&str, String, i32)) {
    let mut args = vec!["run", "-d"];
    args.extend(flags);
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
    push("run -d + logs", logs, 0);
    let memory = ("memory.limit_in_bytes", "memory.max");
    push("--memory 64m", p.cgroup_file(&id, "memory", memory), 0);
    let cpu = ("cpu.cfs_quota_us", "cpu.max");
    push("--cpus 0.5", p.cgroup_file(&id, "cpu", cpu), 0);
    let pids = ("pids.max", "pids.max");
    push("--pids-limit 50", p.cgroup_file(&id, "pids", pids), 0);
    let (o, c) = p.run(&["exec", &id, "sh", "-c", "echo in-exec; exit 4"], None);
    push("exec", o, c);
    let (o, c) = p.under_script(
        &["exec", "-it", &id, "sh", "-c", "tty; read x; echo typed-$x"],
        "xyz\n",
    );
    push("exec -it", o, c);
    let top = p.ok(&["top", &id, "args"]);
    push(
        "top",
        top.lines().filter(|l| l.contains("trap")).collect(),
        0,
    );
    p.ok(&["pause", &id]);
    push("pause", p.status(&id), 0);
    p.ok(&["unpause", &id]);
    push("unpause", p.status(&id), 0);
    p.ok(&["stop", "-t", "30", &id]);
    p.wait_status(&id, "exited");
    push(
        "stop",
        p.ok(&["inspect", "-f", "{{.State.ExitCode}}", &id]),
        0,
    );
    p.ok(&["rm", &id]);
}

/// Where podman's runtime put a container under systemd, as rows: the container's cgroup, the
/// scope's unit properties, the scope's memory.max, and whether the scope outlives `rm`.
/// Not part of [`matrix`]: runtimes place containers differently (crun nests the process in
/// a `container` sub-cgroup of the scope and sets the limits there; runc and berth-runtime
/// use the scope itself and set the limits as unit properties), so the systemd guest's test
/// compares these with runc's.
pub fn placement(p: &Podman) -> Vec<Row> {
    assert!(
        p.setup.systemd(),
        "placement rows need podman's systemd cgroup manager"
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut args = vec!["run", "-d"];
    args.extend(p.setup.run_flags.iter().map(String::as_str));
    args.extend(["--memory", "64m", IMAGE, "sleep", "600"]);
    let id = p.ok(&args).trim().to_string();
    let scope = format!("libpod-{id}.scope");
    let dir = p.cgroup_dir(&id, "memory");
    rows.push(("cgroup".into(), dir.to_string_lossy().replace(&id, "ID"), 0));
    let out = Command::new("systemctl")
        .args([
            "show",
            "-p",
            "ActiveState",
            "-p",
            "Slice",
            "-p",
            "MemoryMax",
            &scope,
        ])
        .output()
        .expect("systemctl");
    rows.push((
        "systemctl show scope".into(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    ));
    let scope_dir = Path::new("/sys/fs/cgroup/machine.slice").join(&scope);
    let memory_max = scope_dir.join("memory.max");
    let limit = fs::read_to_string(&memory_max)
        .unwrap_or_else(|e| format!("{}: {e}", memory_max.display()));
    rows.push(("scope memory.max".into(), limit, 0));
    p.ok(&["rm", "-f", "-t", "0", &id]);
    let left = if scope_dir.exists() {
        "present"
    } else {
        "absent"
    };
    rows.push(("scope after rm".into(), left.into(), 0));
    rows
}

/// Rows as JSON (what the binary prints): `[{"row", "output", "code"}...]`.
pub fn to_json(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|(row, output, code)| json!({"row": row, "output": output, "code": code}))
            .collect(),
    )
}

/// Rows back from [`to_json`]'s form.
pub fn from_json(value: &Value) -> Vec<Row> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("matrix rows are not an array: {value}"))
        .iter()
        .map(|r| {
            (
                r["row"].as_str().unwrap_or_default().to_string(),
                r["output"].as_str().unwrap_or_default().to_string(),
                r["code"]
                    .as_i64()
                    .and_then(|c| i32::try_from(c).ok())
                    .unwrap_or(i32::MIN),
            )
        })
        .collect()
}

/// Panics naming the first row where `ours` differs from `reference`, or a missing row.
pub fn assert_same(reference: &[Row], ours: &[Row], what: &str) {
    for (want, got) in reference.iter().zip(ours) {
        assert_eq!(want, got, "row {:?}: {what} differs from crun", want.0);
    }
    assert_eq!(
        reference.len(),
        ours.len(),
        "{what} ran {} rows, crun {}",
        ours.len(),
        reference.len()
    );
}

/// The output and code of row `name`.
pub fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.0 == name)
        .unwrap_or_else(|| panic!("no row {name:?} in {rows:?}"))
}
