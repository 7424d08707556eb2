//! Isolation, checked from inside the container and from the host: namespaces, pid 1,
//! hostname, unreachable host files, masked and read-only paths, no mount without
//! CAP_SYS_ADMIN, user namespace mapping.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::{TestContainer, kv};
use serde_json::json;

const INSIDE: &str = r#"
echo pid=$$
echo procs=$(ls /proc | grep -c '^[0-9]')
echo hostname=$(hostname)
echo etc_hostname=$(cat /etc/hostname)
if [ -e /host-marker ] || [ -e /config.json ]; then echo host_visible=yes; else echo host_visible=no; fi
echo kcore=$(ls /proc/kcore 2>/dev/null | wc -l)
echo keys_bytes=$(cat /proc/keys | wc -c)
echo acpi_entries=$(ls -A /proc/acpi | wc -l)
if echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null; then echo proc_sys=writable; else echo proc_sys=readonly; fi
if mount -t tmpfs none /tmp 2>/dev/null; then echo mount=ok; else echo mount=denied; fi
echo uid=$(id -u)
echo memory_cgroup=$(grep memory /proc/self/cgroup | cut -d: -f3)
"#;

#[test]
fn the_container_sees_only_itself() {
    let mut c = TestContainer::new("inside", &["sh", "-c", INSIDE]);
    c.config["hostname"] = json!("berth-box");
    c.write_config();
    fs::write(c.bundle().join("host-marker"), "host").unwrap();
    let host_procs = fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .parse::<u32>()
                .is_ok()
        })
        .count();
    let out = c.run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let v = kv(&stdout);
    assert_eq!(v["pid"], "1", "{stdout}");
    let procs: usize = v["procs"].parse().unwrap();
    assert!(
        procs <= 4 && procs < host_procs,
        "container sees {procs} processes: {stdout}"
    );
    assert_eq!(v["hostname"], "berth-box");
    assert_eq!(v["etc_hostname"], "busybox");
    assert_eq!(v["host_visible"], "no");
    assert_eq!(v["kcore"], "0");
    assert_eq!(v["keys_bytes"], "0", "/proc/keys is masked");
    assert_eq!(v["acpi_entries"], "0", "/proc/acpi is masked");
    assert_eq!(v["proc_sys"], "readonly");
    assert_eq!(v["mount"], "denied");
    assert_eq!(v["uid"], "0");
    // The cgroup namespace is rooted at the container's own cgroup.
    assert_eq!(v["memory_cgroup"], "/", "{stdout}");
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn every_namespace_differs_from_the_host() {
    let c = TestContainer::new("nsdiff", &["true"]);
    c.create_ok();
    let state = c.state();
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], c.id.as_str());
    let pid = state["pid"].as_i64().unwrap();
    for ns in ["mnt", "pid", "uts", "ipc", "net", "cgroup"] {
        let host = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let container = fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(host, container, "{ns} namespace is the host's");
    }
    // No user namespace was asked for: the user namespace is the host's.
    assert_eq!(
        fs::read_link("/proc/self/ns/user").unwrap(),
        fs::read_link(format!("/proc/{pid}/ns/user")).unwrap()
    );
    c.ok(["delete", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_uid() {
    let mut c = TestContainer::new(
        "userns",
        &["sh", "-c", "echo uid=$(id -u); cat /proc/self/uid_map"],
    );
    c.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    c.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    c.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    c.write_config();
    c.create_ok();
    let pid = c.state()["pid"].as_i64().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["200000"; 4],
        "{uid_line}"
    );
    assert_ne!(
        fs::read_link("/proc/self/ns/user").unwrap(),
        fs::read_link(format!("/proc/{pid}/ns/user")).unwrap()
    );
    c.ok(["start", &c.id]);
    c.wait_status("stopped");
    let out = c.container_stdout();
    let v = kv(&out);
    assert_eq!(v["uid"], "0", "{out}");
    assert!(out.contains("0     200000      65536"), "{out}");
    c.ok(["delete", &c.id]);
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

/// The mountinfo line of the container's root mount.
fn root_mount_line(c: &TestContainer) -> String {
    let out = c.run();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn rootfs_propagation_follows_the_spec() {
    let script = r#"grep -E '^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / ' /proc/self/mountinfo"#;
    let mut c = TestContainer::new("propagation", &["sh", "-c", script]);
    c.config["linux"]["rootfsPropagation"] = json!("shared");
    c.write_config();
    let shared = root_mount_line(&c);
    assert!(shared.contains(" shared:"), "root not shared: {shared}");

    // Unset, the root is kept from propagating back to the host (runc's rslave default).
    c.config["linux"]
        .as_object_mut()
        .unwrap()
        .remove("rootfsPropagation");
    c.write_config();
    let default = root_mount_line(&c);
    assert!(
        !default.contains(" shared:"),
        "root shared by default: {default}"
    );
}

/// A process in namespaces of its own, made with `unshare --fork`, killed on drop.
struct Holder {
    unshare: std::process::Child,
    /// The forked process: pid 1 of the new pid namespace.
    pid: u32,
}

impl Holder {
    fn new(flags: &[&str]) -> Self {
        let mut unshare = std::process::Command::new("unshare")
            .arg("--fork")
            .args(flags)
            .args(["sleep", "1000"])
            .spawn()
            .expect("unshare (util-linux) is missing");
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let mut pid = None;
        common::wait_until("unshare's child", || {
            pid = fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok());
            // Exec'd: its namespaces are final.
            pid.is_some_and(|p: u32| {
                fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e.ends_with("sleep"))
            })
        });
        let pid = pid.unwrap_or_else(|| {
            let _ = unshare.kill();
            panic!("no holder process")
        });
        Holder { unshare, pid }
    }

    fn ns_inode(&self, ns: &str) -> u64 {
        fs::metadata(format!("/proc/{}/ns/{ns}", self.pid))
            .unwrap()
            .ino()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Killing pid 1 of the namespace takes the namespace's other processes with it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// Runs a container that joins every namespace in `kinds` of `holder` by path and checks,
/// from inside, that each is the holder's.
fn joins_by_path(name: &str, holder: &Holder, kinds: &[(&str, &str)], root_only_map: bool) {
    let script: String = kinds
        .iter()
        .map(|(_, ns)| format!("echo {ns}=$(stat -L -c %i /proc/self/ns/{ns});"))
        .chain(["echo self=$$".to_string()])
        .collect();
    let mut c = TestContainer::new(name, &["sh", "-c", &script]);
    if root_only_map {
        // Only root is mapped: devpts' gid=5 would be refused (runc's rootless spec drops it
        // too).
        for m in c.config["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/dev/pts" {
                m["options"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|o| o != "gid=5");
            }
        }
    }
    // The runtime joins the pid namespace around the clone of init only: its hooks still
    // start in its own.
    let hook_ns = c.bundle().join("hook-pid-ns");
    c.config["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": [
        "sh", "-c", format!("stat -L -c %i /proc/self/ns/pid > {}", hook_ns.display())
    ]}]});
    let namespaces = c.config["linux"]["namespaces"].as_array_mut().unwrap();
    for (typ, ns) in kinds {
        namespaces.retain(|n| n["type"] != *typ);
        namespaces.push(json!({"type": typ, "path": format!("/proc/{}/ns/{ns}", holder.pid)}));
    }
    c.write_config();
    let out = c.run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let v = kv(&stdout);
    for (_, ns) in kinds {
        assert_eq!(
            v[*ns],
            holder.ns_inode(ns).to_string(),
            "{ns} namespace is not the holder's: {stdout}"
        );
    }
    // The holder is pid 1 of the pid namespace the container joined.
    assert_ne!(v["self"], "1", "{stdout}");
    let own = fs::metadata("/proc/self/ns/pid").unwrap().ino();
    assert_eq!(
        fs::read_to_string(&hook_ns).unwrap().trim(),
        own.to_string()
    );
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

const JOINABLE: &[(&str, &str)] = &[
    ("pid", "pid"),
    ("network", "net"),
    ("ipc", "ipc"),
    ("uts", "uts"),
    ("mount", "mnt"),
    ("cgroup", "cgroup"),
];

#[test]
fn every_namespace_joined_by_path_is_the_holders() {
    let holder = Holder::new(&["--pid", "--net", "--ipc", "--uts", "--mount", "--cgroup"]);
    joins_by_path("nsjoin", &holder, JOINABLE, false);
}

#[test]
fn namespaces_joined_by_path_with_their_user_namespace() {
    let holder = Holder::new(&[
        "--user",
        "--map-root-user",
        "--pid",
        "--net",
        "--ipc",
        "--uts",
        "--mount",
        "--cgroup",
    ]);
    let mut kinds = JOINABLE.to_vec();
    kinds.push(("user", "user"));
    joins_by_path("nsjoin-user", &holder, &kinds, true);
}
