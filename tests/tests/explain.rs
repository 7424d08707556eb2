//! `berth explain` end to end, as root: what it reports about a detached container is checked
//! against /proc and the cgroup files directly.

use std::fs;
use std::path::{Path, PathBuf};

use berth_proto::v1::{ContainerState, Resources};
use berth_tests::agent_node::{AgentNode, AgentOptions, unique_node_name};
use berth_tests::fake_scheduler::{FakeScheduler, assignment};
use berth_tests::{Berth, LOCAL_IMAGE, LocalEnv, busybox_image, output, require_root};
use serde_json::Value;

const IMAGE: &str = LOCAL_IMAGE;

fn ns_inode(path: impl AsRef<Path>) -> u64 {
    let link = fs::read_link(path.as_ref()).unwrap();
    let text = link.to_string_lossy();
    let start = text.find('[').unwrap();
    text[start + 1..].trim_end_matches(']').parse().unwrap()
}

fn namespace<'a>(explained: &'a Value, kind: &str) -> &'a Value {
    explained["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} namespace in {explained:#}"))
}

fn status_field(pid: u64, key: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// The directory of `controller`'s v1 cgroup of `pid`, from /proc/PID/cgroup.
fn cgroup_dir(pid: u64, controller: &str) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = text
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _ = parts.next();
            let ctrl = parts.next()?;
            let path = parts.next()?;
            ctrl.split(',').any(|c| c == controller).then_some(path)
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup in /proc/{pid}/cgroup:\n{text}"));
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path.trim_start_matches('/'))
}

#[test]
fn namespaces_cgroups_caps_and_ids_match_proc() {
    let mut env = LocalEnv::new();
    let name = env.run_detached("explain-none", &["-m", "64m", "--pids-limit", "30"]);
    let e = env.berth.json(["explain", &name]);
    let pid = e["pid"].as_u64().expect("a pid");
    assert!(pid > 1, "{e:#}");
    assert_eq!(e["name"], name.as_str());

    // Namespaces: the pid one is the process's own, not the host's.
    let pid_ns = namespace(&e, "pid");
    assert_eq!(
        pid_ns["inode"].as_u64(),
        Some(ns_inode(format!("/proc/{pid}/ns/pid")))
    );
    assert_ne!(
        pid_ns["inode"].as_u64(),
        Some(ns_inode("/proc/self/ns/pid"))
    );
    assert_eq!(
        pid_ns["host_inode"].as_u64(),
        Some(ns_inode("/proc/self/ns/pid"))
    );
    assert_eq!(pid_ns["shared"], false);
    let net = namespace(&e, "net");
    assert_eq!(net["shared"], false, "--network none: {net}");
    assert_eq!(
        net["inode"].as_u64(),
        Some(ns_inode(format!("/proc/{pid}/ns/net")))
    );
    for kind in ["mnt", "uts", "ipc", "pid", "net"] {
        assert_eq!(namespace(&e, kind)["shared"], false, "{kind}");
    }

    // Cgroups: the limits are those of the files the process's cgroup has.
    let limit = fs::read_to_string(cgroup_dir(pid, "memory").join("memory.limit_in_bytes"))
        .unwrap()
        .trim()
        .parse::<u64>()
        .unwrap();
    assert_eq!(limit, 67108864);
    assert_eq!(e["cgroup"]["memory"]["limit_bytes"].as_u64(), Some(limit));
    assert!(e["cgroup"]["memory"]["usage_bytes"].as_u64().unwrap() > 0);
    let pids_max = fs::read_to_string(cgroup_dir(pid, "pids").join("pids.max")).unwrap();
    assert_eq!(pids_max.trim(), "30");
    assert_eq!(e["cgroup"]["pids"]["max"].as_u64(), Some(30));
    assert!(e["cgroup"]["pids"]["current"].as_u64().unwrap() >= 1);

    // Capabilities, seccomp and ids as /proc/PID/status and uid_map have them.
    let eff = &e["capabilities"]["effective"];
    assert_eq!(eff["hex"], status_field(pid, "CapEff").as_str());
    let names: Vec<&str> = eff["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(!names.contains(&"cap_sys_admin"), "{names:?}");
    let mask = u64::from_str_radix(&status_field(pid, "CapEff"), 16).unwrap();
    assert_eq!(names.len(), mask.count_ones() as usize, "{names:?}");
    assert_eq!(
        names.contains(&"cap_kill"),
        mask & (1 << 5) != 0,
        "{names:?}"
    );
    let mode: u64 = status_field(pid, "Seccomp").parse().unwrap();
    assert_eq!(e["seccomp"]["mode"].as_u64(), Some(mode));
    let uid_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(fields, ["0", "0", "4294967295"]);
    assert_eq!(e["user"]["identity"], true);
    assert_eq!(e["user"]["uid_map"][0]["count"].as_u64(), Some(4294967295));

    // Mounts: the count is the mountinfo's; what the kernel has of the usual masked paths is
    // masked (there is no /proc/kcore on some kernels).
    let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert_eq!(
        e["mounts"]["count"].as_u64(),
        Some(mountinfo.lines().count() as u64)
    );
    let masked = e["mounts"]["masked"].as_array().unwrap();
    for path in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        if Path::new(path).exists() {
            assert!(masked.iter().any(|m| m == path), "{path} not masked: {e:#}");
        }
    }
    assert!(!masked.is_empty(), "{e:#}");

    // The report for people says the same in words.
    let text = env.berth.ok(["explain", &name]);
    eprintln!("{text}");
    let inode = pid_ns["inode"].as_u64().unwrap().to_string();
    assert!(text.contains(&inode), "{text}");
    assert!(text.contains("isolated"), "{text}");
    assert!(text.contains("64.0 MiB (67108864 bytes)"), "{text}");
}

#[test]
fn host_network_shares_the_hosts_namespace() {
    let mut env = LocalEnv::new();
    let name = env.run_detached("explain-host", &["--network", "host"]);
    let e = env.berth.json(["explain", &name]);
    let pid = e["pid"].as_u64().unwrap();
    let net = namespace(&e, "net");
    assert_eq!(net["shared"], true, "{net}");
    assert_eq!(net["inode"].as_u64(), Some(ns_inode("/proc/self/ns/net")));
    assert_eq!(
        net["inode"].as_u64(),
        Some(ns_inode(format!("/proc/{pid}/ns/net")))
    );
    assert_eq!(namespace(&e, "pid")["shared"], false);
    assert_eq!(e["cgroup"]["memory"]["limit_bytes"], Value::Null);
}

#[test]
fn an_unknown_container_is_a_clear_error() {
    require_root();
    let berth = Berth::new();
    let err = berth.err(["explain", "no-such-box"]);
    assert!(err.contains("no such container: no-such-box"), "{err}");
}

#[test]
fn a_container_of_an_agent_is_explained_by_the_agent_not_by_the_caller() {
    require_root();
    let sched = FakeScheduler::start();
    let berth = Berth::new();
    busybox_image(&berth, IMAGE);
    let node = unique_node_name("explain");
    sched.set_pod_cidr(&node, "10.93.41.0/24");
    sched.assign(&node, vec![]);
    let mut opts = AgentOptions::default();
    opts.extra_args
        .extend(["--stop-grace".to_string(), "1".to_string()]);
    let n = AgentNode::start_in(berth, &sched, &node, opts);
    let mut a = assignment("explained-1", IMAGE);
    a.command = vec!["sleep".into(), "1000".into()];
    a.resources = Some(Resources {
        cpu_millis: 500,
        memory_bytes: 32 << 20,
    });
    a.pids_limit = 25;
    sched.assign(n.name(), vec![a]);
    let st = sched.wait_state(
        n.name(),
        "explained-1",
        ContainerState::Running,
        std::time::Duration::from_secs(60),
    );
    let agent = n.endpoint_url();
    // The caller runs in a pid namespace of its own with its own /proc, as on another host:
    // the container's pid means nothing there, so every fact must come from the agent.
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(berth_tests::binary("berth"))
        .args(["--data-dir"])
        .arg(n.berth().data_dir.path())
        .args(["explain", "-o", "json", "--agent", &agent, "explained-1"]);
    let out = output(&mut cmd);
    assert!(
        out.status.success(),
        "explain from another pid namespace: {out:?}"
    );
    let e: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(e["pid"].as_u64(), Some(u64::from(st.pid)));
    assert_eq!(e["source"], format!("node {}", n.name()));
    let pid_ns = namespace(&e, "pid");
    assert_eq!(
        pid_ns["inode"].as_u64(),
        Some(ns_inode(format!("/proc/{}/ns/pid", st.pid)))
    );
    assert_eq!(pid_ns["shared"], false);
    assert_eq!(namespace(&e, "net")["shared"], false);
    assert_eq!(
        e["cgroup"]["memory"]["limit_bytes"].as_u64(),
        Some(32 << 20)
    );
    assert_eq!(e["cgroup"]["pids"]["max"].as_u64(), Some(25));
    assert_eq!(e["cgroup"]["cpu"]["quota_us"].as_u64(), Some(50000));
    let err = n
        .berth()
        .err(["explain", "--agent", &agent, "no-such-replica"]);
    assert!(err.contains("no such container"), "{err}");
    sched.assign(n.name(), vec![]);
}
