//! What the node-network tests share: a throwaway "node" netns with its own state dir,
//! removed on drop (even on panic), and code run on a thread inside a netns.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_agent::net::{NetConfig, NodeNetwork};

pub(crate) static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Runs a command, returning stdout; panics with stderr when it fails.
pub(crate) fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a command succeeds (for "is it still there" checks).
pub(crate) fn succeeds(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A throwaway node: its own netns and state dir, removed on drop.
pub(crate) struct Node {
    pub(crate) ns_name: String,
    pub(crate) ns_path: PathBuf,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) node_name: String,
    pub(crate) cidr: ipnet::Ipv4Net,
}

impl Node {
    pub(crate) fn new(third_octet: u8) -> Node {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let ns_name = format!("berth-nt-{}-{n}", std::process::id());
        run(&["ip", "netns", "add", &ns_name]);
        // A fresh netns has lo down; the node's own clients need 127.0.0.1.
        run(&["ip", "-n", &ns_name, "link", "set", "lo", "up"]);
        Node {
            ns_path: PathBuf::from("/run/netns").join(&ns_name),
            ns_name,
            dir: tempfile::tempdir().unwrap(),
            node_name: format!("n{n}"),
            cidr: format!("10.231.{third_octet}.0/24").parse().unwrap(),
        }
    }

    pub(crate) fn with_cidr(third_octet: u8, cidr: &str) -> Node {
        let mut node = Node::new(third_octet);
        node.cidr = cidr.parse().unwrap();
        node
    }

    pub(crate) fn config(&self) -> NetConfig {
        NetConfig {
            node_name: self.node_name.clone(),
            pod_cidr: self.cidr,
            host_netns: Some(self.ns_path.clone()),
            state_dir: self.dir.path().join("net"),
            netns_dir: self.dir.path().join("netns"),
        }
    }

    pub(crate) async fn setup(&self) -> NodeNetwork {
        NodeNetwork::setup(self.config()).await.unwrap()
    }

    pub(crate) fn nft_table(&self, net: &NodeNetwork) -> String {
        self.list_table(net.table())
    }

    /// The service load balancer's table, as `nft list` shows it.
    pub(crate) fn nft_services_table(&self, net: &NodeNetwork) -> String {
        self.list_table(net.services_table())
    }

    /// The service load balancer's table as `nft -j list` shows it.
    pub(crate) fn nft_services_json(&self, net: &NodeNetwork) -> String {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns_name,
            "nft",
            "-j",
            "list",
            "table",
            "ip",
            net.services_table(),
        ])
    }

    fn list_table(&self, table: &str) -> String {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns_name,
            "nft",
            "list",
            "table",
            "ip",
            table,
        ])
    }

    pub(crate) fn has_link(&self, name: &str) -> bool {
        succeeds(&["ip", "-n", &self.ns_name, "link", "show", name])
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Container netns files first (a mount left in a tempdir would make its removal fail).
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("netns")) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let bridge = berth_agent::net::bridge_name(&self.node_name);
        let ns = self.ns_name.as_str();
        for table in [
            berth_agent::net::table_name(&self.node_name),
            berth_agent::net::services_table_name(&self.node_name),
        ] {
            let _ = succeeds(&[
                "ip", "netns", "exec", ns, "nft", "delete", "table", "ip", &table,
            ]);
        }
        let _ = succeeds(&["ip", "-n", ns, "link", "del", &bridge]);
        let _ = succeeds(&["ip", "netns", "del", ns]);
    }
}

/// Runs `f` on a thread inside the netns at `ns`.
pub(crate) fn in_netns<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(ns).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}
