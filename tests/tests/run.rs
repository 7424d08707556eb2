//! `berth run`, `ps`, `stop`, `rm` and `logs` end to end through the `berth` binary, as root,
//! with a busybox image built by the fixture. Each test has its own data dir and names.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_tests::{LOCAL_IMAGE, LocalEnv, output, require_tool};

const IMAGE: &str = LOCAL_IMAGE;

/// What `berth ps -a` lists.
fn ps(env: &LocalEnv, all: bool) -> Vec<serde_json::Value> {
    let args: &[&str] = if all { &["ps", "-a"] } else { &["ps"] };
    env.berth
        .json(args)
        .as_array()
        .expect("ps prints an array")
        .clone()
}

fn status_of(env: &LocalEnv, name: &str) -> Option<String> {
    ps(env, true)
        .iter()
        .find(|row| row["name"] == name)
        .map(|row| row["status"].as_str().unwrap().to_string())
}

/// Nothing of any container is left: no dirs, no runtime state, no mount, no cgroup.
fn assert_nothing_left(env: &LocalEnv, names: &[&str]) {
    let data = env.berth.data_dir.path();
    for sub in ["containers", "rootfs", "run"] {
        let dir = data.join(sub);
        let left: Vec<PathBuf> = match fs::read_dir(&dir) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        };
        assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(data.to_str().unwrap()),
        "a mount under the data dir is left:\n{mounts}"
    );
    for name in names {
        for controller in ["memory", "pids", "cpu"] {
            let cg = cgroup_dir(controller, name);
            assert!(!cg.exists(), "{} is left", cg.display());
        }
    }
}

fn cgroup_dir(controller: &str, id: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("berth")
        .join(id)
}

/// Polls `check` for up to 20 s.
fn poll<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    berth_tests::poll_until(what, Duration::from_secs(20), check)
}

#[test]
fn output_and_exit_codes_pass_through() {
    let env = LocalEnv::new();
    assert_eq!(env.run_ok(&["--rm", IMAGE, "echo", "hi"]), "hi\n");
    let code = |args: &[&str]| env.run(args).status.code();
    assert_eq!(code(&["--rm", IMAGE, "sh", "-c", "exit 7"]), Some(7));
    assert_eq!(code(&["--rm", "--entrypoint", "false", IMAGE]), Some(1));
    assert_nothing_left(&env, &[]);
}

/// Starts `berth run --name NAME ARGS` in the background and waits until it runs.
fn spawn_running(env: &LocalEnv, name: &str, args: &[&str]) -> (std::process::Child, i32) {
    let child = env
        .berth
        .cmd(["run", "--name", name])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    poll("the container to run", || {
        (status_of(env, name).as_deref() == Some("running")).then_some(())
    });
    let state = env
        .berth
        .data_dir
        .path()
        .join("run")
        .join(name)
        .join("state.json");
    let state: serde_json::Value = serde_json::from_slice(&fs::read(state).unwrap()).unwrap();
    let pid = state["pid"].as_i64().unwrap();
    (child, i32::try_from(pid).expect("a pid fits i32"))
}

#[test]
fn signals_end_in_128_plus_n_and_ctrl_c_is_forwarded() {
    let mut env = LocalEnv::new();
    let killed = env.name("killed");
    let (child, pid) = spawn_running(&env, &killed, &["--rm", IMAGE, "sleep", "1000"]);
    output(Command::new("kill").args(["-KILL", &pid.to_string()]));
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(137));
    let interrupted = env.name("interrupted");
    let script = "trap 'echo got-int; exit 9' INT; echo ready; while :; do sleep 0.05; done";
    let (child, _) = spawn_running(&env, &interrupted, &["--rm", IMAGE, "sh", "-c", script]);
    output(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("got-int"));
    assert_nothing_left(&env, &[&killed, &interrupted]);
}

#[test]
fn env_user_workdir_and_hostname_are_visible_inside() {
    let mut env = LocalEnv::new();
    let name = env.name("inside");
    let out = env.run_ok(&[
        "--rm",
        "--name",
        &name,
        "-e",
        "GREETING=hello world",
        "-e",
        "PATH=/bin",
        "--user",
        "nobody",
        "--workdir",
        "/tmp",
        IMAGE,
        "sh",
        "-c",
        "echo $GREETING; echo $PATH; id -u; id -g; pwd; hostname",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "hello world",
            "/bin",
            "65534",
            "65534",
            "/tmp",
            name.as_str()
        ]
    );
    let numeric = env.run_ok(&[
        "--rm",
        "--user",
        "1234:42",
        IMAGE,
        "sh",
        "-c",
        "id -u; id -g",
    ]);
    assert_eq!(numeric, "1234\n42\n");
    let named = env.run_ok(&["--rm", "--hostname", "boxy", IMAGE, "hostname"]);
    assert_eq!(named, "boxy\n");
}

#[test]
fn memory_and_pids_limits_land_in_the_cgroups() {
    let mut env = LocalEnv::new();
    let name = env.name("limits");
    env.run_ok(&[
        "-d",
        "--name",
        &name,
        "-m",
        "64m",
        "--pids-limit",
        "17",
        "--cpus",
        "0.5",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let mem = fs::read_to_string(cgroup_dir("memory", &name).join("memory.limit_in_bytes"))
        .expect("memory cgroup of the container");
    assert_eq!(mem.trim(), (64u64 << 20).to_string());
    let pids = fs::read_to_string(cgroup_dir("pids", &name).join("pids.max")).unwrap();
    assert_eq!(pids.trim(), "17");
    let quota = fs::read_to_string(cgroup_dir("cpu", &name).join("cpu.cfs_quota_us")).unwrap();
    assert_eq!(quota.trim(), "50000");
    env.berth.ok(["rm", "-f", &name]);
    assert_nothing_left(&env, &[&name]);
}

#[test]
fn read_only_root_rejects_writes() {
    let env = LocalEnv::new();
    let out = env.run(&["--rm", "--read-only", IMAGE, "touch", "/written"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{out:?}"
    );
    env.run_ok(&["--rm", IMAGE, "touch", "/written"]);
}

#[test]
fn network_none_has_only_loopback_and_host_shares_the_host() {
    let env = LocalEnv::new();
    assert_eq!(env.run_ok(&["--rm", IMAGE, "ls", "/sys/class/net"]), "lo\n");
    let host: Vec<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let inside = env.run_ok(&["--rm", "--network", "host", IMAGE, "ls", "/sys/class/net"]);
    let mut inside: Vec<&str> = inside.split_whitespace().collect();
    let mut host: Vec<&str> = host.iter().map(String::as_str).collect();
    inside.sort();
    host.sort();
    assert_eq!(inside, host);
}

#[test]
fn rm_flag_leaves_no_dir_mount_state_or_cgroup() {
    let mut env = LocalEnv::new();
    let name = env.name("gone");
    env.run_ok(&["--rm", "--name", &name, "-m", "32m", IMAGE, "true"]);
    assert_nothing_left(&env, &[&name]);
    // Without --rm the exited container stays, listed, until `rm`.
    let kept = env.name("kept");
    let out = env.run(&["--name", &kept, IMAGE, "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(status_of(&env, &kept).as_deref(), Some("exited(5)"));
    assert!(ps(&env, false).iter().all(|r| r["name"] != kept.as_str()));
    env.berth.ok(["rm", &kept]);
    assert_nothing_left(&env, &[&kept]);
}

#[test]
fn detached_container_runs_logs_stops_and_is_removed() {
    let mut env = LocalEnv::new();
    let name = env.name("daemon");
    let script = "echo started; trap 'echo stopping; exit 3' TERM; while true; do sleep 0.05; done";
    let id = env.run_ok(&["-d", "--name", &name, IMAGE, "sh", "-c", script]);
    assert_eq!(id.trim(), name);
    let running = ps(&env, false);
    let row = running
        .iter()
        .find(|r| r["name"] == name.as_str())
        .expect("ps lists the container");
    assert_eq!(row["status"], "running");
    assert_eq!(row["image"], IMAGE);
    assert_eq!(row["command"][0], "sh");
    poll("the container's first output", || {
        let logs = env.berth.ok(["logs", &name]);
        logs.contains("started").then_some(())
    });
    let err = env.berth.err(["rm", &name]);
    assert!(err.contains("running"), "{err}");
    env.berth.ok(["stop", "-t", "10", &name]);
    assert_eq!(status_of(&env, &name).as_deref(), Some("exited(3)"));
    assert!(ps(&env, false).iter().all(|r| r["name"] != name.as_str()));
    let logs = env.berth.ok(["logs", &name]);
    assert_eq!(logs, "started\nstopping\n");
    assert!(!cgroup_dir("memory", &name).exists());
    env.berth.ok(["rm", &name]);
    assert_nothing_left(&env, &[&name]);
}

#[test]
fn exec_runs_in_the_container_with_its_env_and_exit_code() {
    let mut env = LocalEnv::new();
    let name = env.name("execd");
    env.run_ok(&[
        "-d",
        "--name",
        &name,
        "-e",
        "FROM_RUN=1",
        IMAGE,
        "sleep",
        "1000",
    ]);
    // The exec'd process sees the container's hostname, env and root, not the host's.
    let out = env.berth.ok([
        "exec",
        "-e",
        "EXTRA=2",
        &name,
        "sh",
        "-c",
        "echo $(hostname) $FROM_RUN $EXTRA; ls /bin/busybox; exit 0",
    ]);
    assert_eq!(
        out,
        format!("{} 1 2\n/bin/busybox\n", &name[..name.len().min(12)])
    );
    let code = env.berth.code(["exec", &name, "sh", "-c", "exit 7"]);
    assert_eq!(code, 7);
    let err = env.berth.err(["exec", "no-such-container", "true"]);
    assert!(err.contains("no such container"), "{err}");
    env.berth.ok(["stop", "-t", "0", &name]);
    let err = env.berth.err(["exec", &name, "true"]);
    assert!(err.contains("not running"), "{err}");
    env.berth.ok(["rm", &name]);
    assert_nothing_left(&env, &[&name]);
}

#[test]
fn detached_rm_flag_cleans_up_after_exit() {
    let mut env = LocalEnv::new();
    let name = env.name("oneshot");
    env.run_ok(&["-d", "--rm", "--name", &name, IMAGE, "sleep", "1000"]);
    assert_eq!(status_of(&env, &name).as_deref(), Some("running"));
    env.berth.ok(["stop", "-t", "0", &name]);
    poll("the shim's cleanup", || {
        status_of(&env, &name).is_none().then_some(())
    });
    assert_nothing_left(&env, &[&name]);
    // A container that ends at once: its shim may remove it before `run -d` has returned,
    // which must still succeed.
    let quick = env.name("quick");
    let id = env.run_ok(&["-d", "--rm", "--name", &quick, IMAGE, "true"]);
    assert_eq!(id.trim(), quick);
    poll("the shim's cleanup", || {
        status_of(&env, &quick).is_none().then_some(())
    });
    assert_nothing_left(&env, &[&name, &quick]);
}

#[test]
fn interactive_tty_works_under_a_real_pty() {
    let env = LocalEnv::new();
    let script = require_tool("script");
    let berth = berth_tests::binary("berth");
    let inner = format!(
        "{} --data-dir {} run --rm -it {IMAGE} sh -c 'tty; read line; echo got:$line; exit 4'",
        berth.display(),
        env.berth.data_dir.path().display()
    );
    let mut child = Command::new(script)
        .args(["-qec", &inner, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"typed words\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("got:typed words"), "{text:?}");
    assert_nothing_left(&env, &[]);
}

#[test]
fn failed_runs_say_why_and_leave_nothing() {
    let mut env = LocalEnv::new();
    let name = env.name("bad");
    let cases: [(&[&str], &str); 5] = [
        (&["--name", &name, "nosuch:image", "true"], "nosuch"),
        (
            &["--name", &name, "-m", "12x", IMAGE, "true"],
            "invalid memory size",
        ),
        (
            &["--name", &name, "--user", "ghost", IMAGE, "true"],
            "ghost",
        ),
        (
            &["--name", &name, IMAGE, "/no/such/binary"],
            "/no/such/binary",
        ),
        (
            &["--name", &name, "-w", "relative", IMAGE, "true"],
            "relative",
        ),
    ];
    for (args, needle) in cases {
        let out = env.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_nothing_left(&env, &[&name]);
    }
    for cmd in [
        ["stop", "nobody-here"],
        ["rm", "nobody-here"],
        ["logs", "nobody-here"],
    ] {
        let err = env.berth.err(cmd);
        assert!(err.contains("no such container: nobody-here"), "{err}");
    }
    // A name in use is refused and the existing container is untouched.
    env.run_ok(&["--name", &name, IMAGE, "true"]);
    let out = env.run(&["--name", &name, IMAGE, "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
    assert_eq!(status_of(&env, &name).as_deref(), Some("exited(0)"));
}

#[test]
fn detached_start_failure_says_why_and_leaves_nothing() {
    let mut env = LocalEnv::new();
    let name = env.name("badstart");
    let out = env.run(&["-d", "--name", &name, IMAGE, "/no/such/binary"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    // The runtime's own reason, passed on by berth-shim.
    assert!(err.contains("/no/such/binary"), "{err}");
    assert!(status_of(&env, &name).is_none());
    assert_nothing_left(&env, &[&name]);
}

#[test]
fn detached_output_rotates_at_the_cap_and_logs_reads_every_part() {
    let mut env = LocalEnv::new();
    let name = env.name("chatty");
    // About 1.3 MB: more than one 1 MiB part, less than the two parts kept.
    env.run_ok(&[
        "-d", "--name", &name, IMAGE, "busybox", "seq", "1", "200000",
    ]);
    poll("the container to exit", || {
        (status_of(&env, &name).as_deref() == Some("exited(0)")).then_some(())
    });
    let dir = env.berth.data_dir.path().join("containers").join(&name);
    let older = fs::metadata(dir.join("ctr.log.1")).expect("a rotated part");
    assert!(
        older.len() <= 1 << 20,
        "ctr.log.1 has {} bytes",
        older.len()
    );
    let expected: String = (1..=200_000).map(|n| format!("{n}\n")).collect();
    let logs = env.berth.ok(["logs", &name]);
    assert!(logs == expected, "logs differ: {} bytes", logs.len());
    env.berth.ok(["rm", &name]);
    assert_nothing_left(&env, &[&name]);
}
