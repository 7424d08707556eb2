//! berth-agent-systemd-check: inside the systemd guest, a real berth-agent (`--cgroup-driver`
//! left at auto, which picks systemd there) dialling the fake scheduler runs one busybox
//! container with limits, and this prints what systemd and the cgroup files say about it as
//! `key=value` lines: the scope's state and slice, its memory.max and cpu.max, what the agent's
//! /metrics says of it (read from the same v2 files), and, once the
//! assignment is withdrawn, whether the scope is gone. tests/tests/systemd_guest.rs checks them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_proto::v1::ContainerState;
use berth_tests::agent_node::{AgentNode, AgentOptions};
use berth_tests::fake_scheduler::{FakeScheduler, assignment};
use berth_tests::{poll_until, require_root};

const IMAGE: &str = "guest-busybox:1";
const ID: &str = "sdweb";
const WAIT: Duration = Duration::from_secs(180);

fn systemctl_show(unit: &str, property: &str) -> String {
    let out = Command::new("systemctl")
        .args(["show", "-p", property, "--value", unit])
        .output()
        .expect("systemctl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The value of `family`'s sample for this container in a Prometheus text page ("" if none).
fn sample(text: &str, family: &str) -> String {
    let label = format!("container_id=\"{ID}\"");
    text.lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("")
        .to_string()
}

fn main() {
    require_root();
    let sched = FakeScheduler::start();
    let node =
        AgentNode::start_with_busybox(&sched, "sd", "10.94.0.0/24", IMAGE, AgentOptions::default());
    let mut a = assignment(ID, IMAGE);
    a.command = vec!["sleep".into(), "1000".into()];
    sched.assign(node.name(), vec![a]);
    sched.wait_state(node.name(), ID, ContainerState::Running, WAIT);
    let unit = format!("berth-{ID}.scope");
    println!("unit={}", systemctl_show(&unit, "ActiveState"));
    println!("slice={}", systemctl_show(&unit, "Slice"));
    let cgroup = systemctl_show(&unit, "ControlGroup");
    println!("cgroup={cgroup}");
    let dir = Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/'));
    for file in ["memory.max", "cpu.max"] {
        let value = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| e.to_string());
        println!("{file}={}", value.trim());
    }
    println!("unit-memory={}", systemctl_show(&unit, "MemoryMax"));
    // The agent's metrics read the same scope's v2 files (cAdvisor's names).
    let (code, text) =
        berth_tests::dashboard::request(node.metrics_addr(), "GET", "/metrics", &[], "");
    println!("metrics-status={code}");
    for family in [
        "container_spec_memory_limit_bytes",
        "container_memory_usage_bytes",
        "container_cpu_usage_seconds_total",
    ] {
        println!("metrics-{family}={}", sample(&text, family));
    }
    sched.assign(node.name(), vec![]);
    poll_until("the scope to go", WAIT, || (!dir.exists()).then_some(()));
    println!(
        "after-withdraw-unit={}",
        systemctl_show(&unit, "ActiveState")
    );
    println!("after-withdraw-dir=absent");
    drop(node);
}
