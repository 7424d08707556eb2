//! berth on a stock systemd host, in a Debian guest with systemd as PID 1 and the unified
//! cgroup v2 hierarchy (berth_tests::systemd_guest; one boot, KVM where it works, else TCG):
//! berth-runtime's systemd driver through a whole lifecycle, berth-agent (its cgroup driver
//! left at auto) running a container with limits, then the podman row matrix with
//! podman's defaults (cgroup_manager = systemd, so podman passes `--systemd-cgroup` and a
//! `machine.slice:libpod:<id>` cgroupsPath) against crun in the same guest, row by row, and
//! where the container lands (scope, unit properties, memory.max) against runc's systemd
//! driver, which berth-runtime follows (crun nests it one level deeper).

use std::collections::HashMap;
use std::time::Duration;

use berth_tests::podman_matrix::{IMAGE, Row, assert_same, from_json, row};
use berth_tests::systemd_guest::Inputs;
use berth_tests::{
    binary, busybox_layout, busybox_rootfs, require_root, require_tool, skopeo_copy,
};
use serde_json::json;

/// TCG time for the whole guest: boot (~15 s), the lifecycle, the agent, two matrices, three
/// placements (about 230 s measured here); generous for a busy CI machine.
const DEADLINE: Duration = Duration::from_secs(900);

/// The runtime's lifecycle with `--systemd-cgroup` (only on create: later commands must
/// find the driver in the state), printed as `key=value` lines.
const LIFECYCLE: &str = r#"
B=/tmp/bundle
mkdir -p $B/rootfs
tar -C $B/rootfs -xf /mnt/inputs/rootfs.tar
cp /mnt/inputs/config.json $B/config.json
RT=/mnt/inputs/berth-runtime
SCOPE=/sys/fs/cgroup/system.slice/berth-sd1.scope
field() { $RT state sd1 | tr -d ' 
' | sed -n "s/.*\"$1\":\"\{0,1\}\([a-z0-9]*\).*/\1/p"; }
$RT --systemd-cgroup create --bundle $B sd1 </dev/null >/dev/null 2>/tmp/create.err || cat /tmp/create.err
echo "created=$(field status)"
echo "unit=$(systemctl is-active berth-sd1.scope)"
echo "slice=$(systemctl show -p Slice --value berth-sd1.scope)"
echo "init-cgroup=$(cat /proc/$(field pid)/cgroup)"
echo "memory.max=$(cat $SCOPE/memory.max)"
echo "pids.max=$(cat $SCOPE/pids.max)"
$RT start sd1
echo "started=$(field status)"
VDA="$((0x$(stat -c %t /dev/vda))) $((0x$(stat -c %T /dev/vda)))"
echo "devices=$($RT exec --cap CAP_MKNOD sd1 sh -c "echo x >/dev/null && printf null-ok; if mknod /dev/berth-disk b $VDA 2>/dev/null; then head -c1 /dev/berth-disk >/dev/null 2>&1 && printf ,disk-opened || printf ,disk-denied; else printf ,mknod-denied; fi")"
$RT pause sd1
echo "paused=$(field status) freeze=$(cat $SCOPE/cgroup.freeze)"
$RT resume sd1
echo "resumed=$(field status) freeze=$(cat $SCOPE/cgroup.freeze)"
$RT update --memory 64m --pids-limit 40 sd1
echo "updated=$(cat $SCOPE/memory.max) $(cat $SCOPE/pids.max)"
echo "unit-props=$(systemctl show -p MemoryMax -p TasksMax --value berth-sd1.scope | tr '\n' ' ')"
echo "stats=$($RT events --stats sd1 | tr -d ' \n' | grep -o '"pids":{"current":[0-9]*')"
echo "ps=$($RT ps --format json sd1)"
$RT kill sd1 KILL
while [ "$(field status)" != stopped ]; do sleep 0.2; done
$RT delete sd1
echo "deleted-unit=$(systemctl is-active berth-sd1.scope)"
echo "deleted-dir=$(test -e $SCOPE && echo present || echo absent)"
echo "deleted-state=$($RT state sd1 2>&1)"
sed -i 's|"cgroupsPath": *"[^"]*"|"cgroupsPath":"/not/systemd"|' $B/config.json
echo "bad-path=$($RT --systemd-cgroup create --bundle $B sd2 2>&1 </dev/null)"
echo "bad-path-left=$(ls /run/berth-runtime)"
"#;

/// berth-agent (cgroup driver auto) running one container with limits: `key=value` lines.
const AGENT: &str = r#"
echo "==== agent"
BERTH_BIN_DIR=/mnt/inputs /mnt/inputs/berth-agent-systemd-check
"#;

/// The podman matrices (crun, berth-runtime), then where each runtime puts a container
/// (runc, crun, berth-runtime), each as JSON in its own section.
const MATRICES: &str = r#"
for rt in /usr/bin/crun /mnt/inputs/berth-runtime; do
  echo "==== matrix $rt"
  /mnt/inputs/berth-podman-matrix $rt /mnt/inputs/busybox.tar
done
for rt in /usr/bin/runc /usr/bin/crun /mnt/inputs/berth-runtime; do
  echo "==== placement $rt"
  /mnt/inputs/berth-podman-matrix --placement $rt /mnt/inputs/busybox.tar
done
"#;

/// A config.json for the lifecycle: `sleep 600`, 32 MiB and 20 tasks, CAP_MKNOD, no cgroupsPath (the
/// systemd driver's default is then `system.slice:berth:<id>`).
fn lifecycle_config() -> String {
    let mut config = serde_json::to_value(berth_runtime::spec::default_spec()).unwrap();
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["sleep", "600"]);
    config["linux"]["resources"]["memory"] = json!({"limit": 32 << 20});
    config["linux"]["resources"]["pids"] = json!({"limit": 20});
    config["linux"]["cgroupsPath"] = json!("");
    // Root with CAP_MKNOD may make a node of the guest's disk's numbers; the device rules must
    // still keep it from opening it.
    for set in config["process"]["capabilities"]
        .as_object_mut()
        .expect("capabilities")
        .values_mut()
    {
        set.as_array_mut()
            .expect("a capability set")
            .push(json!("CAP_MKNOD"));
    }
    serde_json::to_string_pretty(&config).unwrap()
}

/// Splits the results into `==== NAME` sections.
fn sections(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("==== ") {
            name = n.to_string();
            out.insert(name.clone(), String::new());
        } else if let Some(body) = out.get_mut(&name) {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn berth_runtime_and_podman_defaults_on_a_systemd_host() {
    require_root();
    require_tool("qemu-system-x86_64");
    require_tool("skopeo");
    let inputs = Inputs::new();
    inputs.file("berth-runtime", &binary("berth-runtime"));
    for name in [
        "berth-podman-matrix",
        "berth-agent-systemd-check",
        "berth",
        "berth-agent",
        "berth-shim",
    ] {
        inputs.file(name, &binary(name));
    }
    let work = tempfile::tempdir().unwrap();
    let image = busybox_layout(work.path(), "latest");
    skopeo_copy(
        &image.skopeo_ref(),
        &format!(
            "oci-archive:{}:{IMAGE}",
            inputs.path().join("busybox.tar").display()
        ),
        &[],
    );
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    busybox_rootfs(&rootfs);
    berth_tests::run_ok(
        std::process::Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(inputs.path().join("rootfs.tar"))
            .arg("."),
    );
    std::fs::write(inputs.path().join("config.json"), lifecycle_config()).unwrap();
    inputs.script(&format!(
        "{{ echo '==== lifecycle'\n{LIFECYCLE}\n{AGENT}\n{MATRICES}\n}} >$BERTH_RESULTS 2>&1"
    ));

    let outcome = inputs.boot(DEADLINE);
    let results = String::from_utf8_lossy(&outcome.results).into_owned();
    assert!(
        outcome.exit_code == Some(0) && !outcome.timed_out,
        "the guest's script failed (exit {:?}, timed out {}):\n{results}\n--- console:\n{}",
        outcome.exit_code,
        outcome.timed_out,
        outcome.console_text()
    );
    let first = outcome.first_result.unwrap_or_default();
    eprintln!(
        "systemd guest: first result after {:.1} s, whole run {:.1} s (TCG)",
        first.as_secs_f64(),
        outcome.elapsed.as_secs_f64()
    );
    let parts = sections(&results);
    check_lifecycle(&parts["lifecycle"]);
    check_agent(&parts["agent"]);
    let crun: Vec<Row> = from_json(&parse(&parts, "matrix /usr/bin/crun"));
    let ours: Vec<Row> = from_json(&parse(&parts, "matrix /mnt/inputs/berth-runtime"));
    assert_same(&crun, &ours, "berth-runtime (systemd guest)");
    check_rows(&ours);
    // Placement follows runc's systemd driver (crun differs: see podman_matrix::placement).
    let runc = from_json(&parse(&parts, "placement /usr/bin/runc"));
    let placed = from_json(&parse(&parts, "placement /mnt/inputs/berth-runtime"));
    let crun_placed = parse(&parts, "placement /usr/bin/crun");
    eprintln!("crun's placement, for comparison: {crun_placed}");
    assert_same_as_runc(&runc, &placed);
    check_placement(&placed);
}

fn assert_same_as_runc(runc: &[Row], ours: &[Row]) {
    assert_eq!(
        runc.len(),
        ours.len(),
        "runc {runc:?}, berth-runtime {ours:?}"
    );
    for (want, got) in runc.iter().zip(ours) {
        assert_eq!(
            want, got,
            "placement {:?}: berth-runtime differs from runc",
            want.0
        );
    }
}

fn parse(parts: &HashMap<String, String>, name: &str) -> serde_json::Value {
    let text = parts
        .get(name)
        .unwrap_or_else(|| panic!("no section {name:?} in the results: {parts:?}"));
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
}

fn check_lifecycle(text: &str) {
    let kv: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| *kv.get(k).unwrap_or_else(|| panic!("no {k} in:\n{text}"));
    assert_eq!(get("created"), "created", "{text}");
    assert_eq!(get("unit"), "active", "{text}");
    assert_eq!(get("slice"), "system.slice", "{text}");
    assert_eq!(
        get("init-cgroup"),
        "0::/system.slice/berth-sd1.scope",
        "{text}"
    );
    assert_eq!(get("memory.max"), "33554432", "{text}");
    assert_eq!(get("pids.max"), "20", "{text}");
    assert_eq!(get("started"), "running", "{text}");
    let devices = get("devices");
    assert!(
        devices == "null-ok,disk-denied",
        "under the systemd driver the device rules hold (a node of the guest's disk must not open): {text}"
    );
    assert_eq!(get("paused"), "paused freeze=1", "{text}");
    assert_eq!(get("resumed"), "running freeze=0", "{text}");
    assert_eq!(get("updated"), "67108864 40", "{text}");
    assert_eq!(get("unit-props").trim(), "67108864 40", "{text}");
    assert!(get("stats").starts_with("\"pids\":{\"current\":"), "{text}");
    assert!(get("ps").starts_with('['), "{text}");
    assert_ne!(get("deleted-unit"), "active", "{text}");
    assert_eq!(get("deleted-dir"), "absent", "{text}");
    assert!(get("deleted-state").contains("does not exist"), "{text}");
    assert!(
        get("bad-path").contains(
            "expected cgroupsPath to be of format \"slice:prefix:name\" for systemd cgroups, \
             got \"/not/systemd\" instead"
        ),
        "{text}"
    );
    assert_eq!(get("bad-path-left"), "", "{text}");
}

/// The agent chose the systemd driver: its container is the scope `berth-<id>.scope` in the
/// node's slice, with the assignment's limits (64 MiB, 100m cpu), gone once withdrawn.
fn check_agent(text: &str) {
    let kv: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| *kv.get(k).unwrap_or_else(|| panic!("no {k} in:\n{text}"));
    assert_eq!(get("unit"), "active", "{text}");
    let slice = get("slice");
    assert!(
        slice.starts_with("berth-sd_") && slice.ends_with(".slice"),
        "{text}"
    );
    assert_eq!(
        get("cgroup"),
        format!("/berth.slice/{slice}/berth-sdweb.scope"),
        "{text}"
    );
    assert_eq!(get("memory.max"), "67108864", "{text}");
    assert_eq!(get("cpu.max"), "10000 100000", "{text}");
    assert_eq!(get("unit-memory"), "67108864", "{text}");
    // The agent's metrics read the scope's v2 files.
    assert_eq!(get("metrics-status"), "200", "{text}");
    assert_eq!(
        get("metrics-container_spec_memory_limit_bytes"),
        "67108864",
        "{text}"
    );
    let usage: f64 = get("metrics-container_memory_usage_bytes")
        .parse()
        .unwrap_or_else(|e| panic!("memory usage not a number ({e}): {text}"));
    assert!(usage > 0.0, "{text}");
    let cpu: f64 = get("metrics-container_cpu_usage_seconds_total")
        .parse()
        .unwrap_or_else(|e| panic!("cpu usage not a number ({e}): {text}"));
    assert!(cpu > 0.0, "{text}");
    assert_ne!(get("after-withdraw-unit"), "active", "{text}");
    assert_eq!(get("after-withdraw-dir"), "absent", "{text}");
}

/// What the rows are about under systemd, beyond both runtimes agreeing.
fn check_rows(ours: &[Row]) {
    let out = |name: &str| row(ours, name).1.as_str();
    assert_eq!(row(ours, "run --rm").2, 3);
    assert_eq!(out("run --rm"), "hello\n");
    assert_eq!(out("--memory 64m"), "67108864");
    assert_eq!(out("--cpus 0.5"), "50000 100000");
    assert_eq!(out("--pids-limit 50"), "50");
    assert_eq!(out("pause"), "paused");
    assert_eq!(out("stop").trim(), "5");
    assert_eq!(out("kill").trim(), "137");
}

/// The container is in podman's scope under machine.slice, systemd knows the unit with the
/// limit, the limit is in the scope's memory.max, and `rm` leaves no scope behind.
fn check_placement(placed: &[Row]) {
    let out = |name: &str| row(placed, name).1.as_str();
    assert_eq!(
        out("cgroup"),
        "/sys/fs/cgroup/machine.slice/libpod-ID.scope"
    );
    let show = out("systemctl show scope");
    assert!(
        show.contains("Slice=machine.slice")
            && show.contains("ActiveState=active")
            && show.contains("MemoryMax=67108864"),
        "{show}"
    );
    assert_eq!(out("scope memory.max").trim(), "67108864");
    assert_eq!(out("scope after rm"), "absent");
}
