//! cgroup v2 only: limits in the unified files, controllers enabled down the path or refused
//! by name, devices through the eBPF program, usage from v2 files, `explain` on v2.
//!
//! This project's VM runs cgroup v1 hybrid, so these are `#[ignore]`d here and run, with
//! `--include-ignored`, in the pure cgroup v2 guest of tests/tests/guest_cgroup_v2.rs; each
//! fails loudly when not on v2.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{TestContainer, require_v2};
use serde_json::json;

const MIB: u64 = 1 << 20;

fn running(c: &TestContainer) {
    c.create_ok();
    c.ok(["start", &c.id]);
    c.wait_status("running");
}

/// MAJ:MIN of the guest's scratch disk (the harness attaches one as /dev/vda).
fn scratch_disk() -> (u64, u64) {
    let dev = fs::read_to_string("/sys/block/vda/dev")
        .expect("io.max needs a block device: the guest's scratch disk /dev/vda is missing");
    let (major, minor) = dev.trim().split_once(':').expect("MAJ:MIN");
    (major.parse().unwrap(), minor.parse().unwrap())
}

#[test]
#[ignore = "cgroup v2 only: runs in the guest of tests/tests/guest_cgroup_v2.rs"]
fn limits_land_in_the_unified_files() {
    require_v2();
    let (major, minor) = scratch_disk();
    let mut c = TestContainer::new("v2limits", &["sleep", "600"]);
    c.config["linux"]["resources"]["memory"] =
        json!({"limit": 32 * MIB, "swap": 48 * MIB, "reservation": 16 * MIB});
    c.config["linux"]["resources"]["cpu"] =
        json!({"shares": 1024, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"});
    c.config["linux"]["resources"]["pids"] = json!({"limit": 77});
    c.config["linux"]["resources"]["blockIO"] = json!({
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": MIB}]
    });
    c.config["linux"]["resources"]["hugepageLimits"] =
        json!([{"pageSize": "2MB", "limit": 4 * MIB}]);
    c.write_config();
    running(&c);
    let read = |file: &str| c.cgroup_read(("", ""), file);
    assert_eq!(read("memory.max"), (32 * MIB).to_string());
    // The spec's swap is memory plus swap; v2's memory.swap.max is the swap alone.
    assert_eq!(read("memory.swap.max"), (16 * MIB).to_string());
    assert_eq!(read("memory.low"), (16 * MIB).to_string());
    // runc's (1.3) and crun's conversion of shares to a weight maps the default 1024 shares
    // to the default weight 100.
    assert_eq!(read("cpu.weight"), "100");
    assert_eq!(read("cpu.max"), "20000 100000");
    assert_eq!(read("cpuset.cpus"), "0");
    assert_eq!(read("cpuset.mems"), "0");
    assert_eq!(read("pids.max"), "77");
    let io = read("io.max");
    assert!(
        io.lines()
            .any(|l| l.starts_with(&format!("{major}:{minor} rbps={MIB} "))),
        "{io}"
    );
    assert_eq!(read("hugetlb.2MB.max"), (4 * MIB).to_string());
    c.ok(["delete", "--force", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
#[ignore = "cgroup v2 only: runs in the guest of tests/tests/guest_cgroup_v2.rs"]
fn stats_come_from_the_v2_files() {
    require_v2();
    let busy = "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 600 & wait";
    let mut c = TestContainer::new("v2stats", &["sh", "-c", busy]);
    c.config["linux"]["resources"]["memory"] = json!({"limit": 64 * MIB});
    c.config["linux"]["resources"]["pids"] = json!({"limit": 50});
    c.write_config();
    running(&c);
    // The loop's CPU time shows once the shell has started `sleep` beside itself.
    common::wait_until("the container's shell to start sleep", || {
        c.ok(["ps", "--format", "json", &c.id]).matches(',').count() >= 1
    });
    let events: serde_json::Value =
        serde_json::from_str(&c.ok(["events", "--stats", &c.id])).unwrap();
    let data = &events["data"];
    let cpu = data["cpu"]["usage"]["usage_total"].as_u64().unwrap_or(0);
    assert!(cpu > 0, "cpu usage: {data}");
    let memory = &data["memory"]["memory"];
    let usage = memory["usage"].as_u64().unwrap_or(0);
    assert!(usage > 0 && usage < 64 * MIB, "memory: {memory}");
    assert_eq!(memory["limit"], 64 * MIB, "{memory}");
    assert_eq!(
        usage.to_string(),
        c.cgroup_read(("", ""), "memory.current"),
        "stats.memory.usage is memory.current"
    );
    let pids = &data["pids"];
    assert!(pids["current"].as_u64().unwrap_or(0) >= 2, "{pids}");
    assert_eq!(pids["limit"], 50, "{pids}");
    assert_eq!(data["memory"]["oom_kill"], 0, "{data}");
    c.ok(["delete", "--force", &c.id]);
}

/// A cgroup made by a test beside the containers', removed on drop (after its children).
struct Parent(PathBuf);

impl Parent {
    fn new(name: &str) -> Self {
        let dir = Path::new("/sys/fs/cgroup").join(format!("{name}-{}", std::process::id()));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Parent(dir)
    }
    fn rel(&self, child: &str) -> String {
        format!("/{}/{child}", self.0.file_name().unwrap().to_string_lossy())
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        // Processes a test parked here go to the root first.
        if let Ok(procs) = fs::read_to_string(self.0.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = fs::write("/sys/fs/cgroup/cgroup.procs", pid);
            }
        }
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
#[ignore = "cgroup v2 only: runs in the guest of tests/tests/guest_cgroup_v2.rs"]
fn a_controller_the_parent_lacks_is_enabled_there() {
    require_v2();
    let parent = Parent::new("berth-v2-parent");
    let subtree = fs::read_to_string(parent.0.join("cgroup.subtree_control")).unwrap();
    assert!(
        !subtree.contains("pids"),
        "a new cgroup enables nothing: {subtree}"
    );
    let mut c = TestContainer::new("v2enable", &["sleep", "600"]);
    c.cgroup = parent.rel("c");
    c.config["linux"]["cgroupsPath"] = json!(c.cgroup);
    c.config["linux"]["resources"]["pids"] = json!({"limit": 9});
    c.write_config();
    running(&c);
    let subtree = fs::read_to_string(parent.0.join("cgroup.subtree_control")).unwrap();
    assert!(subtree.split_whitespace().any(|x| x == "pids"), "{subtree}");
    assert_eq!(c.cgroup_read(("", ""), "pids.max"), "9");
    c.ok(["delete", "--force", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
#[ignore = "cgroup v2 only: runs in the guest of tests/tests/guest_cgroup_v2.rs"]
fn a_controller_that_cannot_be_enabled_is_refused_by_name() {
    require_v2();
    // A cgroup holding a process may not give controllers to children (v2's "no internal
    // processes" rule): the memory controller cannot reach a container below it.
    let parent = Parent::new("berth-v2-busy");
    let mut holder = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    fs::write(parent.0.join("cgroup.procs"), holder.id().to_string()).unwrap();
    let mut c = TestContainer::new("v2refuse", &["true"]);
    c.cgroup = parent.rel("c");
    c.config["linux"]["cgroupsPath"] = json!(c.cgroup);
    c.config["linux"]["resources"]["memory"] = json!({"limit": 16 * MIB});
    c.write_config();
    let out = c.create();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(!out.status.success(), "{out:?}");
    let err = fs::read_to_string(c.bundle().join("stderr")).unwrap();
    assert!(
        err.contains("controller memory") && err.contains("holds processes"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
#[ignore = "cgroup v2 only: runs in the guest of tests/tests/guest_cgroup_v2.rs"]
fn devices_are_denied_by_the_ebpf_program() {
    require_v2();
    // Root with CAP_MKNOD may make a node of /dev/mem's numbers (c 1:1), but the device
    // program lets it open only the standard devices.
    let script = "echo x > /dev/null && echo null=ok; \
                  if mknod /tmp/mem c 1 1 2>/dev/null; then \
                    head -c 1 /tmp/mem >/dev/null 2>/tmp/err && echo mem=opened || echo mem=\"$(cat /tmp/err)\"; \
                  else echo mem=mknod-denied; fi";
    let mut c = TestContainer::new("v2devices", &["sh", "-c", script]);
    let caps = c.config["process"]["capabilities"].as_object_mut().unwrap();
    for set in caps.values_mut() {
        set.as_array_mut().unwrap().push(json!("CAP_MKNOD"));
    }
    c.write_config();
    let out = c.run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = common::kv(&stdout);
    assert_eq!(v.get("null").map(String::as_str), Some("ok"), "{out:?}");
    let mem = v.get("mem").cloned().unwrap_or_default();
    assert!(
        mem == "mknod-denied" || mem.contains("Operation not permitted"),
        "c 1:1 must not open: {out:?}"
    );
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
#[ignore = "cgroup v2 only: runs in the guest of tests/tests/guest_cgroup_v2.rs"]
fn explain_reads_the_v2_files() {
    require_v2();
    let mut c = TestContainer::new("v2explain", &["sleep", "600"]);
    c.config["linux"]["resources"]["memory"] = json!({"limit": 48 * MIB});
    c.config["linux"]["resources"]["cpu"] = json!({"quota": 25000, "period": 100000});
    c.config["linux"]["resources"]["pids"] = json!({"limit": 33});
    c.write_config();
    running(&c);
    let pid = i32::try_from(c.state()["pid"].as_i64().unwrap()).unwrap();
    let e =
        berth_runtime::explain::explain(c.id.clone(), c.id.clone(), pid, "guest".into()).unwrap();
    let cg = &e.cgroup;
    assert_eq!(cg.version, "v2", "{cg:?}");
    let dir = c.cgroup_dir("");
    assert_eq!(cg.memory.limit_bytes, Some(48 * MIB), "{cg:?}");
    assert_eq!(cg.memory.source.as_deref(), Some(&*dir.join("memory.max")));
    assert_eq!(
        (cg.cpu.quota_us, cg.cpu.period_us),
        (Some(25000), Some(100000))
    );
    assert_eq!(cg.cpu.source.as_deref(), Some(&*dir.join("cpu.max")));
    assert_eq!(cg.pids.max, Some(33), "{cg:?}");
    assert!(cg.pids.current.unwrap_or(0) >= 1, "{cg:?}");
    let report = berth_runtime::explain::report(&e);
    assert!(report.contains("cgroup2"), "{report}");
    assert!(
        report.contains("48.0 MiB") || report.contains("48 MiB"),
        "{report}"
    );
    c.ok(["delete", "--force", &c.id]);
}
