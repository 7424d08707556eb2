//! cgroup resources, checked in the kernel's files and by their effect: memory limit and OOM,
//! pids limit, cpu quota/shares/cpuset, freezer pause/resume, usage statistics.

mod common;

use std::fs;

use common::TestContainer;
use serde_json::json;

/// Doubles a shell string until the memory limit kills it.
const HOG: &str = "a=xxxxxxxxxxxxxxxx; while true; do a=$a$a; done";

fn with_memory_limit(name: &str) -> TestContainer {
    let mut c = TestContainer::new(name, &["sh", "-c", HOG]);
    let limit = 32 * 1024 * 1024;
    c.config["linux"]["resources"]["memory"] = json!({"limit": limit, "swap": limit});
    c.write_config();
    c
}

#[test]
fn memory_limit_kills_with_137() {
    let c = with_memory_limit("oomrun");
    let out = c.run();
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn oom_shows_in_state_and_events() {
    let c = with_memory_limit("oomevents");
    c.create_ok();
    assert_eq!(
        c.cgroup_read(("memory", "memory.limit_in_bytes"), "memory.max"),
        (32 * 1024 * 1024).to_string()
    );
    c.ok(["start", &c.id]);
    c.wait_status("stopped");
    let events: serde_json::Value =
        serde_json::from_str(&c.ok(["events", "--stats", &c.id])).unwrap();
    assert_eq!(events["type"], "stats");
    let memory = &events["data"]["memory"];
    assert!(memory["oom_kill"].as_u64().unwrap() >= 1, "{memory}");
    if common::is_v2() {
        // The count comes from memory.events, whose oom_kill line the kernel keeps.
        let events = c.cgroup_read(("", ""), "memory.events");
        let kills = events
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .unwrap_or_else(|| panic!("no oom_kill in memory.events: {events}"));
        assert_eq!(memory["oom_kill"].to_string(), kills, "{events}");
    }
    assert_eq!(
        memory["memory"]["max_usage"], memory["memory"]["limit"],
        "{memory}"
    );
    c.ok(["delete", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    // Counts the forks that worked ($! changes) with shell builtins only.
    let script = "i=0; ok=0; last=; while [ $i -lt 40 ]; do sleep 1000 & \
                  if [ \"$!\" != \"$last\" ]; then ok=$((ok+1)); last=$!; fi; i=$((i+1)); done; \
                  echo forked=$ok";
    let mut c = TestContainer::new("pids", &["sh", "-c", script]);
    // Control: with room for all of them, the loop forks 40 times.
    c.config["linux"]["resources"]["pids"] = json!({"limit": 64});
    c.write_config();
    let out = c.run();
    assert_eq!(
        common::kv(&String::from_utf8_lossy(&out.stdout))["forked"],
        "40",
        "{out:?}"
    );
    // With pids.max 8 the ninth process cannot be made: busybox sh stops at the failed fork.
    c.config["linux"]["resources"]["pids"] = json!({"limit": 8});
    c.write_config();
    let out = c.run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("can't fork"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("forked="),
        "{out:?}"
    );
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn cpu_settings_land_in_the_cgroup_files() {
    let mut c = TestContainer::new("cpu", &["true"]);
    c.config["linux"]["resources"]["cpu"] =
        json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"});
    c.config["linux"]["resources"]["pids"] = json!({"limit": 123});
    c.write_config();
    c.create_ok();
    if common::is_v2() {
        // runc's (1.3), crun's and libcgroups' conversion of shares to a weight, which maps
        // 1024 shares to the default weight 100.
        assert_eq!(c.cgroup_read(("", ""), "cpu.weight"), "59");
        assert_eq!(c.cgroup_read(("", ""), "cpu.max"), "50000 100000");
    } else {
        assert_eq!(c.cgroup_read(("cpu", "cpu.shares"), ""), "512");
        assert_eq!(c.cgroup_read(("cpu", "cpu.cfs_quota_us"), ""), "50000");
        assert_eq!(c.cgroup_read(("cpu", "cpu.cfs_period_us"), ""), "100000");
    }
    assert_eq!(c.cgroup_read(("cpuset", "cpuset.cpus"), "cpuset.cpus"), "0");
    assert_eq!(c.cgroup_read(("cpuset", "cpuset.mems"), "cpuset.mems"), "0");
    assert_eq!(c.cgroup_read(("pids", "pids.max"), "pids.max"), "123");
    let pid = c.state()["pid"].as_i64().unwrap().to_string();
    let procs = c.cgroup_read(("memory", "cgroup.procs"), "cgroup.procs");
    assert!(procs.lines().any(|l| l == pid), "{procs}");
    c.ok(["delete", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn pause_and_resume_through_the_freezer() {
    let c = TestContainer::new("pause", &["sleep", "1000"]);
    c.create_ok();
    c.ok(["start", &c.id]);
    assert_eq!(c.status(), "running");
    c.ok(["pause", &c.id]);
    assert_eq!(c.status(), "paused");
    if common::is_v2() {
        assert_eq!(c.cgroup_read(("", ""), "cgroup.freeze"), "1");
        let events = c.cgroup_read(("", ""), "cgroup.events");
        assert!(events.lines().any(|l| l == "frozen 1"), "{events}");
    } else {
        assert_eq!(c.cgroup_read(("freezer", "freezer.state"), ""), "FROZEN");
    }
    let err = c.err(["pause", &c.id]);
    assert!(err.contains("paused"), "{err}");
    c.ok(["resume", &c.id]);
    assert_eq!(c.status(), "running");
    if common::is_v2() {
        let events = c.cgroup_read(("", ""), "cgroup.events");
        assert!(events.lines().any(|l| l == "frozen 0"), "{events}");
    }
    let pids: Vec<i64> = serde_json::from_str(&c.ok(["ps", "--format", "json", &c.id])).unwrap();
    assert_eq!(pids, [c.state()["pid"].as_i64().unwrap()]);
    let listed: serde_json::Value =
        serde_json::from_str(&c.ok(["list", "--format", "json"])).unwrap();
    assert_eq!(listed[0]["id"], c.id.as_str());
    assert_eq!(listed[0]["status"], "running");
    c.ok(["pause", &c.id]);
    // A paused container is thawed so that --force can kill it.
    c.ok(["delete", "--force", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn spec_devices_are_made_and_allowed() {
    let mut c = TestContainer::new(
        "devices",
        &[
            "sh",
            "-c",
            "stat -c 'node=%F %t:%T %a' /dev/berth-loopctl; head -c 0 /dev/berth-loopctl && echo open=ok",
        ],
    );
    c.config["linux"]["devices"] = json!([{
        "path": "/dev/berth-loopctl", "type": "c", "major": 10, "minor": 237, "fileMode": 0o600, "uid": 0, "gid": 0
    }]);
    c.write_config();
    c.create_ok();
    if !common::is_v2() {
        // On v2 the rules are an eBPF program (no file to read); the open below shows them.
        let allowed = c.cgroup_read(("devices", "devices.list"), "");
        assert!(allowed.lines().any(|l| l == "c 10:237 rwm"), "{allowed}");
    }
    c.ok(["start", &c.id]);
    c.wait_status("stopped");
    let out = c.container_stdout();
    let v = common::kv(&out);
    let err = fs::read_to_string(c.bundle().join("stderr")).unwrap_or_default();
    assert!(v.contains_key("node"), "stdout {out:?} stderr {err:?}");
    assert_eq!(v["node"], "character special file a:ed 600", "{out}");
    assert_eq!(v.get("open").map(String::as_str), Some("ok"), "{out} {err}");
    c.ok(["delete", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn missing_cgroups_path_defaults_to_berth_id_and_is_removed() {
    let mut c = TestContainer::new("defaultcg", &["true"]);
    c.config["linux"]
        .as_object_mut()
        .unwrap()
        .remove("cgroupsPath");
    c.write_config();
    c.cgroup = format!("/berth-{}", c.id);
    c.create_ok();
    let pid = c.state()["pid"].as_i64().unwrap().to_string();
    for ctrl in ["memory", "pids", "freezer", "devices"] {
        let procs = c.cgroup_read((ctrl, "cgroup.procs"), "cgroup.procs");
        assert!(procs.lines().any(|l| l == pid), "{ctrl}: {procs}");
    }
    c.ok(["delete", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}
