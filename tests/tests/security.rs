//! Security defaults end to end, as root: the default seccomp profile inside real containers
//! (a blocked syscall gets EPERM; busybox, a Debian userland and Python still work), and
//! `berth run`'s --security-opt, --cap-add/--cap-drop and --privileged as /proc shows them.

use berth_tests::{LOCAL_IMAGE, LocalEnv, debian_image, output, require_root};

const IMAGE: &str = LOCAL_IMAGE;

/// The container's own /proc/self/status line `key`, run (`--rm`) with `flags`.
fn status_line(env: &LocalEnv, flags: &[&str], key: &str) -> String {
    let script = format!("grep '^{key}:' /proc/self/status");
    let mut args = vec!["--rm"];
    args.extend_from_slice(flags);
    args.extend([IMAGE, "sh", "-c", &script]);
    let line = env.run_ok(&args);
    line.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn default_profile_blocks_unshare_and_unconfined_lifts_it() {
    let env = LocalEnv::new();
    assert_eq!(status_line(&env, &[], "Seccomp"), "2");
    let blocked = env.run(&["--rm", IMAGE, "busybox", "unshare", "-U", "true"]);
    let stderr = String::from_utf8_lossy(&blocked.stderr);
    assert!(
        !blocked.status.success() && stderr.contains("Operation not permitted"),
        "unshare -U under the default profile: {blocked:?}"
    );
    let unconfined = ["--security-opt", "seccomp=unconfined"];
    assert_eq!(status_line(&env, &unconfined, "Seccomp"), "0");
    // The same call succeeds without the filter: the EPERM above was seccomp's.
    let mut args = vec!["--rm"];
    args.extend(unconfined);
    args.extend([IMAGE, "busybox", "unshare", "-U", "true"]);
    env.run_ok(&args);
}

#[test]
fn a_profile_file_replaces_the_default() {
    let env = LocalEnv::new();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let out = env.run(&["--rm", "--security-opt", &opt, IMAGE, "mkdir", "/tmp/x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Permission denied"),
        "mkdir under a profile that refuses it with EACCES: {out:?}"
    );
    env.run_ok(&["--rm", IMAGE, "mkdir", "/tmp/x"]);
    let bad = env.run(&[
        "--rm",
        "--security-opt",
        "seccomp=/no/such/profile.json",
        IMAGE,
        "true",
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("/no/such/profile.json"),
        "{bad:?}"
    );
}

#[test]
fn capabilities_and_no_new_privileges_follow_the_flags() {
    let env = LocalEnv::new();
    assert_eq!(
        status_line(&env, &["--cap-drop", "ALL"], "CapEff"),
        "0000000000000000"
    );
    // CAP_NET_RAW is bit 13.
    assert_eq!(
        status_line(
            &env,
            &["--cap-drop", "ALL", "--cap-add", "net_raw"],
            "CapEff"
        ),
        format!("{:016x}", 1u64 << 13)
    );
    let nnp = ["--security-opt", "no-new-privileges"];
    assert_eq!(status_line(&env, &nnp, "NoNewPrivs"), "1");
    let off = ["--security-opt", "no-new-privileges=false"];
    assert_eq!(status_line(&env, &off, "NoNewPrivs"), "0");
    let bad = env.run(&["--rm", "--cap-add", "CAP_FLY", IMAGE, "true"]);
    assert!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("CAP_FLY"),
        "{bad:?}"
    );
}

#[test]
fn privileged_has_every_capability_no_filter_and_the_host_devices() {
    let env = LocalEnv::new();
    let host_bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .unwrap();
    let privileged = ["--privileged"];
    assert_eq!(status_line(&env, &privileged, "CapEff"), host_bounding);
    assert_eq!(status_line(&env, &privileged, "Seccomp"), "0");
    // /proc/keys is masked (an empty bind) by default and readable when privileged; the host's
    // /dev/kmsg is there, and mounting works.
    let script = "test -c /dev/kmsg && echo kmsg; mount -t tmpfs none /tmp && echo mounted; \
                  grep -c ' /proc/keys ' /proc/self/mountinfo";
    let out = env.run(&["--rm", "--privileged", IMAGE, "sh", "-c", script]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "kmsg\nmounted\n0\n",
        "privileged: {out:?}"
    );
    let out = env.run(&["--rm", IMAGE, "sh", "-c", "test -c /dev/kmsg"]);
    assert!(
        !out.status.success(),
        "an unprivileged container has no /dev/kmsg"
    );
}

#[test]
fn explain_shows_the_filter_and_the_profile() {
    let mut env = LocalEnv::new();
    let name = env.run_detached("sec-explain", &[]);
    let e = env.berth.json(["explain", &name]);
    let s = &e["seccomp"];
    assert_eq!(s["mode"], 2, "{s}");
    assert_eq!(s["mode_name"], "filter", "{s}");
    assert!(s["filters"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["profile"]["default_action"], "SCMP_ACT_ERRNO", "{s}");
    assert!(s["profile"]["syscalls"].as_u64().unwrap() > 300, "{s}");
    let text = env.berth.ok(["explain", &name]);
    assert!(text.contains("mode 2 (filter)"), "{text}");
    assert!(text.contains("rules over"), "{text}");
}

#[test]
fn debian_and_python_run_under_the_default_profile() {
    let env = LocalEnv::new();
    debian_image(&env.berth, "debian:bookworm");
    let script = "grep '^Seccomp:' /proc/self/status; ls /usr/bin | grep -c . >/dev/null; \
                  dpkg-query -W -f='${Package}\\n' bash; id -un";
    let out = env.run_ok(&["--rm", "debian:bookworm", "bash", "-c", script]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["Seccomp:\t2", "bash", "root"],
        "{out}"
    );
    // Threads and a child process: glibc's clone3 gets ENOSYS and falls back to clone.
    let python = "import subprocess, threading; t = threading.Thread(target=print, args=('thread',)); \
                  t.start(); t.join(); print(subprocess.run(['echo', 'child'], capture_output=True).stdout.decode().strip())";
    let out = env.run_ok(&["--rm", "debian:bookworm", "python3", "-c", python]);
    assert_eq!(out, "thread\nchild\n");
}

/// The value of `key` in a /proc status text.
fn field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

#[test]
fn a_deployments_security_table_reaches_its_container() {
    use berth_tests::cluster::{DeployApi, Fabric, SchedulerProc, all_ready, start_nodes};
    use std::time::Duration;
    require_root();
    let wait = Duration::from_secs(90);
    let image = "security-busybox:1";
    let sched = SchedulerProc::start(&[]);
    let mut fabric = Fabric::new();
    let nodes = start_nodes(&sched, &mut fabric, 1, "sec", image);
    let name = format!("sec-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\nimage = \"{image}\"\ncommand = [\"sleep\", \"1000\"]\n\
             [security]\ncap_drop = [\"ALL\"]\nno_new_privileges = true\n\
             run_as = \"1000:1000\"\nread_only = true\n"
        ),
    )
    .unwrap();
    let out = output(&mut sched.berth(&[
        "deploy",
        "-f",
        file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "90s",
    ]));
    assert!(out.status.success(), "berth deploy: {out:?}");
    let api = DeployApi::new(&sched.endpoint(), wait);
    let d = api.wait(&name, "1 ready replica", |d| all_ready(d, 1));
    let id = d.replica_status[0].container_id.clone();
    let exec = |args: &[&str]| {
        let mut cmd = nodes[0]
            .berth()
            .cmd(["exec", "--agent", &nodes[0].endpoint_url(), &id]);
        let out = output(cmd.args(args));
        assert!(out.status.success(), "berth exec {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The container's first process, as the kernel sees it.
    let status = exec(&["cat", "/proc/1/status"]);
    assert_eq!(field(&status, "CapEff"), "0000000000000000", "{status}");
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{status}");
    assert_eq!(field(&status, "Seccomp"), "2", "{status}");
    assert_eq!(field(&status, "Uid"), "1000", "{status}");
    let mountinfo = exec(&["cat", "/proc/1/mountinfo"]);
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no root mount in {mountinfo}"));
    let options = root.split_whitespace().nth(5).unwrap();
    assert!(options.split(',').any(|o| o == "ro"), "root mount: {root}");
    api.delete(&name);
}
