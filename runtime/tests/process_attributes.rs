//! The process attributes of the spec, read back from inside the container: user and
//! additional groups, umask, oomScoreAdj, no_new_privs, all five capability sets, rlimits,
//! domainname, sysctls, and a network namespace joined by path.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use common::{TestContainer, kv};
use serde_json::json;

const INSIDE: &str = r#"
echo uid=$(id -u)
echo gid=$(id -g)
echo groups=$(id -G)
echo umask=$(umask)
echo oom=$(cat /proc/self/oom_score_adj)
for f in NoNewPrivs CapInh CapPrm CapEff CapBnd CapAmb; do
  echo $f=$(grep "^$f:" /proc/self/status | cut -f2)
done
echo nofile=$(grep 'Max open files' /proc/self/limits | tr -s ' ' | cut -d' ' -f4,5)
echo domainname=$(cat /proc/sys/kernel/domainname)
echo ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)
echo netns=$(readlink /proc/self/ns/net)
"#;

/// A network namespace made for this test with `ip netns add`, deleted on drop.
struct NamedNetns(String);

impl NamedNetns {
    fn new(tag: &str) -> Self {
        let name = format!("berth-rt-{tag}-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {name}");
        NamedNetns(name)
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn the_process_gets_every_attribute_of_the_spec() {
    let netns = NamedNetns::new("attrs");
    let mut c = TestContainer::new("attrs", &["sh", "-c", INSIDE]);
    let cap = json!(["CAP_NET_BIND_SERVICE"]);
    c.config["process"]["user"] =
        json!({"uid": 1000, "gid": 1000, "additionalGids": [27, 44], "umask": 0o027});
    c.config["process"]["oomScoreAdj"] = json!(123);
    c.config["process"]["noNewPrivileges"] = json!(true);
    c.config["process"]["capabilities"] = json!({
        "bounding": cap, "permitted": cap, "effective": cap, "inheritable": cap, "ambient": cap
    });
    c.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}]);
    c.config["domainname"] = json!("berth.test");
    c.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    let namespaces = c.config["linux"]["namespaces"].as_array_mut().unwrap();
    for ns in namespaces.iter_mut() {
        if ns["type"] == "network" {
            ns["path"] = json!(netns.path());
        }
    }
    if !namespaces.iter().any(|ns| ns["type"] == "network") {
        namespaces.push(json!({"type": "network", "path": netns.path()}));
    }
    c.write_config();

    let out = c.run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let v = kv(&stdout);
    assert_eq!(v["uid"], "1000", "{stdout}");
    assert_eq!(v["gid"], "1000");
    assert_eq!(v["groups"], "1000 27 44");
    assert_eq!(v["umask"], "0027");
    assert_eq!(v["oom"], "123");
    assert_eq!(v["NoNewPrivs"], "1");
    // CAP_NET_BIND_SERVICE is bit 10: in every set, effective through the ambient set even
    // though the process is not root.
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(v[set], "0000000000000400", "{set}: {stdout}");
    }
    assert_eq!(v["nofile"], "512 1024");
    assert_eq!(v["domainname"], "berth.test");
    assert_eq!(
        v["ip_forward"], "1",
        "sysctl applied in the joined namespace"
    );
    let inode = std::fs::metadata(netns.path()).unwrap().ino();
    assert_eq!(
        v["netns"],
        format!("net:[{inode}]"),
        "joined the named netns"
    );
}
