//! The lifecycle through the binary: bad input and wrong states give one clear error line and
//! a non-zero exit; failed creates leave nothing behind (many cycles: tests/leaks.rs).

mod common;

use std::fs;

use common::TestContainer;
use serde_json::json;

fn one_line(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line: {err}");
    assert!(lines[0].starts_with("berth-runtime: "), "{err}");
    lines[0]
}

fn create_err(c: &TestContainer) -> String {
    let out = c.create();
    assert!(!out.status.success(), "create should have failed");
    fs::read_to_string(c.bundle().join("stderr")).unwrap()
}

#[test]
fn bad_bundles_are_refused_naming_the_field() {
    let c = TestContainer::new("badspec", &["true"]);
    fs::remove_file(c.bundle().join("config.json")).unwrap();
    let err = create_err(&c);
    assert!(one_line(&err).contains("config.json"), "{err}");

    fs::write(
        c.bundle().join("config.json"),
        "{\"root\": {\"path\": \"rootfs\"}}",
    )
    .unwrap();
    let err = create_err(&c);
    assert!(one_line(&err).contains("ociVersion"), "{err}");

    let mut bad = c.config.clone();
    bad["process"]["user"]["uid"] = json!("zero");
    fs::write(c.bundle().join("config.json"), bad.to_string()).unwrap();
    let err = create_err(&c);
    assert!(one_line(&err).contains("invalid type"), "{err}");

    let mut v2 = c.config.clone();
    v2["ociVersion"] = json!("2.0.0");
    fs::write(c.bundle().join("config.json"), v2.to_string()).unwrap();
    let err = create_err(&c);
    assert!(one_line(&err).contains("ociVersion"), "{err}");

    let mut no_root = c.config.clone();
    no_root["root"]["path"] = json!("missing-rootfs");
    fs::write(c.bundle().join("config.json"), no_root.to_string()).unwrap();
    let err = create_err(&c);
    assert!(one_line(&err).contains("root.path"), "{err}");
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn malformed_and_duplicate_ids_are_refused() {
    let c = TestContainer::new("ids", &["true"]);
    let long = "a".repeat(1025);
    for id in ["../x", "", "a/b", long.as_str()] {
        let err = c.err(["create", "--bundle", c.bundle().to_str().unwrap(), id]);
        assert!(
            one_line(&err).contains("invalid container id"),
            "{id:?}: {err}"
        );
    }
    c.create_ok();
    let err = create_err(&c);
    assert!(one_line(&err).contains("already exists"), "{err}");
    // The refused duplicate did not disturb the first one.
    assert_eq!(c.status(), "created");
    c.ok(["delete", &c.id]);
    let err = c.err(["state", &c.id]);
    assert!(one_line(&err).contains("does not exist"), "{err}");
}

#[test]
fn wrong_states_are_refused() {
    let c = TestContainer::new("states", &["sleep", "1000"]);
    c.create_ok();
    let err = c.err(["kill", &c.id, "NOSUCHSIG"]);
    assert!(one_line(&err).contains("unknown signal"), "{err}");
    c.ok(["start", &c.id]);
    let err = c.err(["start", &c.id]);
    assert!(one_line(&err).contains("running: cannot start"), "{err}");
    let err = c.err(["delete", &c.id]);
    assert!(
        one_line(&err).contains("cannot delete without --force"),
        "{err}"
    );
    assert_eq!(c.status(), "running");
    c.ok(["kill", &c.id, "SIGKILL"]);
    c.wait_status("stopped");
    let err = c.err(["kill", &c.id, "9"]);
    assert!(one_line(&err).contains("stopped: cannot kill"), "{err}");
    c.ok(["delete", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn kill_by_name_and_number_then_force_delete() {
    let c = TestContainer::new(
        "killnames",
        &[
            "sh",
            "-c",
            "trap 'exit 3' TERM; echo trapped; while true; do sleep 1; done",
        ],
    );
    c.create_ok();
    c.ok(["start", &c.id]);
    // As init of its pid namespace, the shell only receives TERM once it has a handler.
    common::wait_until("the TERM trap", || c.container_stdout().contains("trapped"));
    c.ok(["kill", &c.id, "TERM"]);
    c.wait_status("stopped");
    c.ok(["delete", &c.id]);

    let c = TestContainer::new("forcedel", &["sleep", "1000"]);
    c.create_ok();
    c.ok(["start", &c.id]);
    c.ok(["delete", "--force", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

/// A change to a test's config.json.
type ConfigEdit = Box<dyn Fn(&mut serde_json::Value)>;

/// Every way create can fail after it started making things must unwind all of them.
#[test]
fn failed_creates_leave_nothing_behind() {
    let cases: Vec<(&str, ConfigEdit, &str)> = vec![
        (
            "badmount",
            Box::new(|cfg| {
                cfg["mounts"].as_array_mut().unwrap().push(json!({
                    "destination": "/mnt", "type": "berthnosuchfs", "source": "none"
                }))
            }),
            "mount",
        ),
        (
            "badcgroup",
            Box::new(|cfg| cfg["linux"]["resources"]["cpu"] = json!({"cpus": "999"})),
            "cgroup",
        ),
        (
            "nobinary",
            Box::new(|cfg| cfg["process"]["args"] = json!(["berth-no-such-binary"])),
            "berth-no-such-binary",
        ),
        (
            "badcwd",
            Box::new(|cfg| cfg["process"]["cwd"] = json!("/no/such/dir")),
            "chdir",
        ),
    ];
    for (name, edit, expect) in cases {
        let mut c = TestContainer::new(name, &["true"]);
        edit(&mut c.config);
        c.write_config();
        let err = create_err(&c);
        assert!(one_line(&err).contains(expect), "{name}: {err}");
        assert!(c.leftovers().is_empty(), "{name}: {:?}", c.leftovers());
        let listed = c.ok(["list", "--quiet"]);
        assert!(listed.trim().is_empty(), "{name}: {listed}");
    }
}

#[test]
fn spec_writes_a_default_config_once() {
    let c = TestContainer::new("spec", &["true"]);
    let dir = c.bundle().join("fresh");
    fs::create_dir(&dir).unwrap();
    c.ok(["spec", "--bundle", dir.to_str().unwrap()]);
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["process"]["args"], json!(["sh"]));
    assert!(config["ociVersion"].as_str().unwrap().starts_with("1."));
    // berth's default seccomp profile, resolved into the config (issue 12's safe defaults).
    let seccomp = &config["linux"]["seccomp"];
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO", "{seccomp}");
    let rules = seccomp["syscalls"].as_array().expect("seccomp rules");
    assert!(
        rules.iter().any(|r| r["names"]
            .as_array()
            .is_some_and(|n| n.contains(&json!("close_range")))),
        "close_range is allowed: {seccomp}"
    );
    let err = c.err(["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(one_line(&err).contains("already exists"), "{err}");
}

#[test]
fn detached_run_lists_processes_and_kill_all_reaches_them() {
    let c = TestContainer::new("detach", &["sh", "-c", "sleep 1000 & sleep 1001"]);
    // The container keeps the stdio it is given: files, not pipes this test would wait on.
    let out = c.with_stdio_files(&["run", "--detach"]);
    assert!(out.status.success(), "{}", c.container_stdout());
    assert_eq!(c.status(), "running");
    let mut pids: Vec<i64> = Vec::new();
    // sh execs its last command: init becomes `sleep 1001`, with `sleep 1000` beside it.
    common::wait_until("both sleeps", || {
        pids = serde_json::from_str(&c.ok(["ps", "--format", "json", &c.id])).unwrap();
        pids.len() == 2
    });
    let table = c.ok(["ps", &c.id]);
    assert!(table.lines().next().unwrap().contains("PID"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains("sleep 100")).count(),
        2,
        "{table}"
    );
    let list = c.ok(["list"]);
    let row = list.lines().find(|l| l.starts_with(&c.id)).expect("listed");
    assert!(row.contains("running"), "{list}");
    // TERM to all: the plain `sleep 1000` dies; init, as its pid namespace's init without a
    // handler, does not; so only --all can have reached the other process.
    let init = c.state()["pid"].as_i64().unwrap();
    let other = pids.iter().copied().find(|p| *p != init).unwrap();
    c.ok(["kill", "--all", &c.id, "TERM"]);
    common::wait_until("the non-init sleep to die", || {
        berth_runtime::sys::proc_stat::read(i32::try_from(other).unwrap()).is_none_or(|s| s.ended())
    });
    assert_eq!(c.status(), "running");
    c.ok(["kill", "--all", &c.id, "KILL"]);
    c.wait_status("stopped");
    c.ok(["delete", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn foreground_run_passes_signals_on() {
    let c = TestContainer::new(
        "forward",
        &[
            "sh",
            "-c",
            "trap 'exit 7' INT; echo ready; while true; do sleep 1; done",
        ],
    );
    let out = fs::File::create(c.bundle().join("stdout")).unwrap();
    let mut cmd = c.cmd(["run", "--bundle"]);
    cmd.arg(c.bundle()).arg(&c.id).stdout(out);
    let mut runtime = cmd.spawn().unwrap();
    common::wait_until("the INT trap", || c.container_stdout().contains("ready"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(runtime.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = runtime.wait().unwrap();
    assert_eq!(status.code(), Some(7), "{status:?}");
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}
