//! runc's `exec`, `update`, `features`, `--version` and the bad-input cases callers (podman,
//! conmon, containerd) rely on: one clear error line, a non-zero exit, nothing changed.

mod common;

use std::fs;

use common::TestContainer;
use serde_json::json;

/// A running container whose init sleeps; `start`ed with stdio in bundle files.
fn running(name: &str) -> TestContainer {
    let c = TestContainer::new(name, &["sleep", "600"]);
    c.create_ok();
    c.ok(["start", &c.id]);
    c.wait_status("running");
    c
}

#[test]
fn exec_runs_in_the_containers_namespaces_and_returns_the_exit_code() {
    let c = running("exec-plain");
    let init_pid = c.state()["pid"].as_i64().unwrap();
    let out = c.output([
        "exec",
        "--env",
        "BERTH_X=42",
        "--cwd",
        "/tmp",
        &c.id,
        "sh",
        "-c",
        "echo $BERTH_X $(pwd) $(hostname); ls /proc | grep -c '^1$'; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hostname = c.config["hostname"].as_str().unwrap_or("").to_string();
    assert!(
        stdout.starts_with(&format!("42 /tmp {hostname}")),
        "{stdout}"
    );
    // Inside the container's pid namespace, init is pid 1.
    assert_eq!(stdout.lines().nth(1), Some("1"), "{stdout}");
    // And the process sat in the container's cgroup while it ran: the memory cgroup of
    // init is the container's.
    let cg = fs::read_to_string(format!("/proc/{init_pid}/cgroup")).unwrap();
    assert!(cg.contains(&c.cgroup), "{cg}");
}

#[test]
fn exec_user_and_detach_with_pid_file() {
    let c = running("exec-user");
    let out = c.output(["exec", "--user", "65534:65534", &c.id, "id", "-u"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "65534");

    let pid_file = c.bundle().join("exec.pid");
    let process = c.bundle().join("process.json");
    let mut p = c.config["process"].clone();
    p["args"] = json!(["sleep", "300"]);
    fs::write(&process, p.to_string()).unwrap();
    let mut cmd = c.cmd([
        "exec".as_ref(),
        "--detach".as_ref(),
        "--pid-file".as_ref(),
        pid_file.as_os_str(),
        "--process".as_ref(),
        process.as_os_str(),
        c.id.as_ref(),
    ]);
    cmd.stdout(fs::File::create(c.bundle().join("exec.out")).unwrap());
    cmd.stderr(fs::File::create(c.bundle().join("exec.err")).unwrap());
    let status = cmd.status().unwrap();
    assert!(
        status.success(),
        "{}",
        fs::read_to_string(c.bundle().join("exec.err")).unwrap()
    );
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pids: Vec<i64> = serde_json::from_str(&c.ok(["ps", "--format", "json", &c.id])).unwrap();
    assert!(pids.contains(&i64::from(pid)), "{pid} not in {pids:?}");
}

#[test]
fn exec_bad_input_is_one_clear_error() {
    let c = running("exec-bad");
    let process = c.bundle().join("bad.json");
    fs::write(&process, "{not json").unwrap();
    let err = c.err([
        "exec".as_ref(),
        "--process".as_ref(),
        process.as_os_str(),
        c.id.as_ref(),
    ]);
    assert!(err.contains("invalid process JSON"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let err = c.err([
        "exec",
        "--tty",
        "--console-socket",
        "/nonexistent/sock",
        &c.id,
        "true",
    ]);
    assert!(err.contains("/nonexistent/sock"), "{err}");
    let err = c.err(["exec", "berth-no-such-container", "true"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = c.err(["kill", &c.id, "SIGNOPE"]);
    assert!(err.contains("unknown signal"), "{err}");
    // Nothing changed: still running.
    assert_eq!(c.status(), "running");

    c.ok(["kill", &c.id, "9"]);
    c.wait_status("stopped");
    let err = c.err(["exec", &c.id, "true"]);
    assert!(err.contains("is stopped"), "{err}");
}

#[test]
fn update_changes_limits_and_a_rejected_value_changes_nothing() {
    let c = running("update");
    let memory = || c.cgroup_read(("memory", "memory.limit_in_bytes"), "memory.max");
    c.ok(["update", "--memory", "64m", "--pids-limit", "50", &c.id]);
    assert_eq!(memory(), "67108864");
    assert_eq!(c.cgroup_read(("pids", "pids.max"), "pids.max"), "50");

    let res = c.bundle().join("res.json");
    fs::write(
        &res,
        json!({"cpu": {"quota": 50000, "period": 100000}}).to_string(),
    )
    .unwrap();
    c.ok([
        "update".as_ref(),
        "--resources".as_ref(),
        res.as_os_str(),
        c.id.as_ref(),
    ]);
    if common::is_v2() {
        assert_eq!(c.cgroup_read(("", ""), "cpu.max"), "50000 100000");
    } else {
        assert_eq!(c.cgroup_read(("cpu", "cpu.cfs_quota_us"), ""), "50000");
    }

    // Within one controller, so the order is fixed (controllers are applied in HashMap
    // order): the memory limit is written first and accepted, then a memory+swap limit
    // below it is refused (by the kernel on v1, by libcgroups on v2). The memory limit must
    // go back.
    let swap = || c.cgroup_read(("memory", "memory.memsw.limit_in_bytes"), "memory.swap.max");
    let swap_before = swap();
    let err = c.err(["update", "--memory", "32m", "--memory-swap", "16m", &c.id]);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let named = if common::is_v2() { "swap" } else { "memsw" };
    assert!(err.contains(named), "the refusal names {named}: {err}");
    assert_eq!(memory(), "67108864");
    assert_eq!(swap(), swap_before);
}

#[test]
fn version_features_and_systemd_cgroup() {
    let c = TestContainer::new("version", &["true"]);
    let v = c.ok(["--version"]);
    let lines: Vec<&str> = v.lines().collect();
    assert_eq!(lines.len(), 3, "{v}");
    assert!(lines[0].starts_with("berth-runtime version "), "{v}");
    assert!(lines[1].starts_with("commit: "), "{v}");
    assert_eq!(lines[2], "spec: 1.2.0");
    let features: serde_json::Value = serde_json::from_str(&c.ok(["features"])).unwrap();
    assert_eq!(features["ociVersionMax"], "1.2.0");
    assert!(
        features["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&json!("pid"))
    );
    assert_eq!(features["linux"]["cgroup"]["systemd"], true);
    // This host has no systemd (NOTES.md): create says so, and leaves nothing behind.
    let out = c.with_stdio_files(&["--systemd-cgroup", "create"]);
    assert!(!out.status.success());
    let err = fs::read_to_string(c.bundle().join("stderr")).unwrap();
    assert!(err.contains("needs systemd as PID 1"), "{err}");
    assert_eq!(c.leftovers(), Vec::<String>::new());
    // Other commands accept the flag (podman passes it to every call): the state decides.
    let err = c.err(["--systemd-cgroup", "state", &c.id]);
    assert!(err.contains("does not exist"), "{err}");
    c.ok(["--rootless", "false", "list", "--format", "json"]);
}

#[test]
fn a_systemd_cgroups_path_without_the_flag_is_refused() {
    let mut c = TestContainer::new("sdpath", &["true"]);
    c.config["linux"]["cgroupsPath"] = json!("machine.slice:libpod:x");
    c.write_config();
    let out = c.create();
    assert!(!out.status.success());
    let err = fs::read_to_string(c.bundle().join("stderr")).unwrap();
    assert!(
        err.contains("got \"machine.slice:libpod:x\" instead")
            && err.contains("needs --systemd-cgroup"),
        "{err}"
    );
    assert_eq!(c.leftovers(), Vec::<String>::new());
}
