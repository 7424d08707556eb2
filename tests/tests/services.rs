//! Services end to end on the 3-node fabric: a real berth-scheduler, three real agents (each
//! node's network in its own namespace), real containers, nftables and the node DNS. A client
//! finds `hello` by name and reaches every replica over the virtual IP; a rollout under load
//! drops no request; a replica that fails readiness, or a node that is lost, leaves every
//! node's maps; teardown leaves nothing behind.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use berth_proto::v1::*;
use berth_tests::agent_node::AgentNode;
use berth_tests::cluster::{
    DeployApi, Fabric, SchedulerProc, all_ready, httpd_spec, start_nodes_with, with_http_service,
};
use berth_tests::services::{
    Load, Reply, container_netns, dns_listeners, listed_endpoints, nft_endpoints, svc_tables,
    vip_flows,
};
use berth_tests::{Berth, busybox_image, debian_image, poll_until};

const IMAGE: &str = "svc-busybox:1";
const DEBIAN: &str = "svc-debian:1";
const WAIT: Duration = Duration::from_secs(90);

struct Cluster {
    sched: SchedulerProc,
    nodes: Vec<AgentNode>,
    fabric: Fabric,
    api: DeployApi,
}

/// A scheduler and three agents with the busybox image; node 0 also has the Debian image and
/// the label `debian=yes` when `debian` is set.
fn cluster(debian: bool) -> Cluster {
    let sched = SchedulerProc::start(&[]);
    let mut fabric = Fabric::new();
    let nodes = start_nodes_with(&sched.endpoint(), &mut fabric, 3, "s", |i, opts| {
        if !(debian && i == 0) {
            let berth = Berth::new();
            busybox_image(&berth, IMAGE);
            return berth;
        }
        // On tmpfs: unpacking Debian's 100 MB layer, and removing it afterwards, takes
        // 15 s each on this machine's disk.
        let berth = Berth::new_in(Path::new("/dev/shm"));
        busybox_image(&berth, IMAGE);
        debian_image(&berth, DEBIAN);
        opts.labels.push(("debian".into(), "yes".into()));
        berth
    });
    let api = DeployApi::new(&sched.endpoint(), WAIT);
    poll_until("every node ready", WAIT, || {
        let nodes = api.nodes();
        (nodes.len() == 3 && nodes.iter().all(|n| n.ready)).then_some(())
    });
    Cluster {
        sched,
        nodes,
        fabric,
        api,
    }
}

impl Cluster {
    fn node(&self, name: &str) -> &AgentNode {
        berth_tests::agent_node::named(&self.nodes, name)
    }

    /// `sh -c SCRIPT` in container `id` on node `node`, which must succeed; its stdout.
    fn exec(&self, node: &str, id: &str, script: &str) -> String {
        self.node(node).sh(id, script)
    }

    /// Waits until ListServices and the maps of every node in `nodes` give `hello` exactly
    /// the endpoints `ips`.
    fn wait_endpoints(&self, what: &str, nodes: &[&AgentNode], ips: &BTreeSet<String>) {
        poll_until(what, WAIT, || {
            (listed_endpoints(&self.api, "hello") == *ips
                && nodes.iter().all(|n| nft_endpoints(n, "hello") == *ips))
            .then_some(())
        });
    }

    fn all_nodes(&self) -> Vec<&AgentNode> {
        self.nodes.iter().collect()
    }
}

/// hello's httpd replicas (`hello-VERSION-from-CONTAINER_ID`) with service port 80 → 8080.
fn hello(version: &str, replicas: u32) -> DeploymentSpec {
    with_http_service(httpd_spec("hello", IMAGE, version, replicas))
}

/// A client that sleeps, for calls made from inside it.
fn client(image: &str) -> DeploymentSpec {
    DeploymentSpec {
        name: "client".into(),
        image: image.into(),
        command: vec!["sleep".into(), "3600".into()],
        replicas: 1,
        resources: Some(Resources {
            cpu_millis: 100,
            memory_bytes: 64 << 20,
        }),
        ..Default::default()
    }
}

/// Deploys hello (3 ready replicas, one on each node) and returns it.
fn deploy_hello(c: &Cluster) -> Deployment {
    c.api.apply(hello("v1", 3));
    let d = c.api.wait("hello", "3 ready replicas", |d| all_ready(d, 3));
    let nodes: BTreeSet<_> = d.replica_status.iter().map(|r| &r.node).collect();
    assert_eq!(nodes.len(), 3, "one replica on each node: {d:?}");
    assert!(!d.virtual_ip.is_empty(), "hello has a virtual IP: {d:?}");
    d
}

fn replica_ips(d: &Deployment) -> BTreeSet<String> {
    d.replica_status.iter().map(|r| r.ip.clone()).collect()
}

/// The running client replica: (node, container id).
fn deploy_client(c: &Cluster, image: &str) -> (String, String) {
    c.api.apply(client(image));
    let d = c
        .api
        .wait("client", "the client running", |d| all_ready(d, 1));
    let r = &d.replica_status[0];
    (r.node.clone(), r.container_id.clone())
}

/// Python from the Debian image (no `http` module in python3-minimal, so a raw socket):
/// resolve `hello` through the libc resolver, then GET / 60 times, printing the address and
/// then one body a line.
const CALLS: &str = r#"
import socket
print(socket.getaddrinfo("hello", 80, type=socket.SOCK_STREAM)[0][4][0])
for _ in range(60):
    s = socket.create_connection(("hello", 80), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\nHost: hello\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    head, body = data.split(b"\r\n\r\n", 1)
    assert b" 200 " in head.split(b"\r\n")[0], head
    print(body.decode().strip())
"#;

#[test]
fn a_client_finds_hello_by_name_and_reaches_every_replica_over_the_virtual_ip() {
    let c = cluster(true);
    let d = deploy_hello(&c);
    let (client_node, client_id) = deploy_client(&c, DEBIAN);
    let ips = replica_ips(&d);
    c.wait_endpoints("hello's endpoints on every node", &c.all_nodes(), &ips);

    let script = format!("python3 -c '{CALLS}'");
    let out = c.exec(&client_node, &client_id, &script);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(d.virtual_ip.as_str()),
        "`hello` resolves to the VIP: {out}"
    );
    let bodies: Vec<&str> = lines.collect();
    assert_eq!(bodies.len(), 60, "60 answers: {out}");
    let seen: BTreeSet<&str> = bodies.iter().copied().collect();
    let expected: BTreeSet<String> = d
        .replica_status
        .iter()
        .map(|r| format!("hello-v1-from-{}", r.container_id))
        .collect();
    let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(seen, expected, "all 3 replicas answered: {bodies:?}");
    let remote = d
        .replica_status
        .iter()
        .filter(|r| r.node != client_node)
        .filter(|r| seen.contains(format!("hello-v1-from-{}", r.container_id).as_str()))
        .count();
    assert_eq!(remote, 2, "both replicas on other nodes answered: {d:?}");
}

/// The failed replies, with when they were sent, for a failure message.
fn failures(replies: &[Reply]) -> Vec<String> {
    replies
        .iter()
        .filter_map(|r| {
            r.result
                .as_ref()
                .err()
                .map(|e| format!("sent at {:?}, after {:?}: {e}", r.sent, r.took))
        })
        .collect()
}

#[test]
fn a_rolling_update_under_200_requests_a_second_drops_no_request() {
    let c = cluster(false);
    let d = deploy_hello(&c);
    let (client_node, client_id) = deploy_client(&c, IMAGE);
    let ips = replica_ips(&d);
    c.wait_endpoints("hello's endpoints on every node", &c.all_nodes(), &ips);
    let vip: SocketAddr = format!("{}:80", d.virtual_ip).parse().unwrap();
    let netns = container_netns(c.node(&client_node), &client_id);
    let load = Load::start(&netns, vip, 200);
    poll_until("100 answers before the rollout", WAIT, || {
        (load.replies().iter().filter(|r| r.result.is_ok()).count() >= 100).then_some(())
    });

    let rollout_from = load.elapsed();
    c.api.apply(hello("v2", 3));
    let done = c.api.watch("hello", false);
    assert_eq!(
        RolloutPhase::try_from(done.phase),
        Ok(RolloutPhase::Complete),
        "{done:?}"
    );
    c.api.wait("hello", "3 ready v2 replicas", |d| {
        all_ready(d, 3) && d.revision == 2
    });
    poll_until("the v1 replicas gone", WAIT, || {
        (c.api.containers("hello").len() == 3).then_some(())
    });
    let rollout_to = load.elapsed();
    let after = load.replies().len() + 200;
    poll_until("200 more answers after the rollout", WAIT, || {
        (load.replies().len() >= after).then_some(())
    });
    let replies = load.finish();

    let failed = failures(&replies);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed (rollout from {rollout_from:?} to {rollout_to:?}):\n{}",
        failed.len(),
        replies.len(),
        failed.join("\n")
    );
    let versions: BTreeSet<&str> = replies
        .iter()
        .filter_map(|r| r.result.as_ref().ok())
        .map(|body| {
            ["hello-v1-from-", "hello-v2-from-"]
                .into_iter()
                .find(|v| body.starts_with(v))
                .unwrap_or_else(|| panic!("an answer of neither version: {body:?}"))
        })
        .collect();
    assert_eq!(versions.len(), 2, "both versions answered: {versions:?}");
    let span = replies.iter().map(|r| r.sent).max().unwrap_or_default();
    eprintln!(
        "{} requests sent over {span:?} (the rollout from {rollout_from:?} to {rollout_to:?}), none failed",
        replies.len()
    );
}

/// The readiness probe of the readiness test: passes while /tmp/ready exists, and counts every
/// run in /tmp/passed or /tmp/failed, so the test counts probes instead of timing them.
const PROBE: &str =
    "if [ -e /tmp/ready ]; then echo >> /tmp/passed; else echo >> /tmp/failed; exit 1; fi";

/// Lines in `file` in the container: how many probes of that outcome ran.
fn probes(c: &Cluster, r: &ReplicaStatus, file: &str) -> usize {
    c.exec(
        &r.node,
        &r.container_id,
        &format!("cat {file} 2>/dev/null | wc -l"),
    )
    .trim()
    .parse()
    .expect("a count of probes")
}

#[test]
fn a_replica_failing_readiness_leaves_every_map_within_two_probes_and_returns() {
    let c = cluster(false);
    let mut spec = hello("v1", 3);
    spec.command[2] = format!("touch /tmp/ready && {}", spec.command[2]);
    // One failed probe is enough to count as not ready: the endpoint must then be gone
    // before the third failing probe runs, i.e. within two periods. The count is read after
    // the maps were seen without it (an upper bound), so a 1 s period leaves that read
    // room on a busy machine.
    spec.readiness = Some(Probe {
        check: Some(probe::Check::Exec(ExecCheck {
            command: vec!["sh".into(), "-c".into(), PROBE.into()],
        })),
        period_ms: 1000,
        failure_threshold: 1,
        ..Default::default()
    });
    c.api.apply(spec);
    let d = c.api.wait("hello", "3 ready replicas", |d| all_ready(d, 3));
    let mut ips = replica_ips(&d);
    c.wait_endpoints("hello's endpoints on every node", &c.all_nodes(), &ips);

    let r = &d.replica_status[0];
    c.exec(&r.node, &r.container_id, ": > /tmp/failed && rm /tmp/ready");
    ips.remove(&r.ip);
    c.wait_endpoints("the failing replica out of every map", &c.all_nodes(), &ips);
    let failed = probes(&c, r, "/tmp/failed");
    assert!(
        (1..=2).contains(&failed),
        "out of the endpoints before the 3rd failing probe, after {failed}"
    );

    c.exec(
        &r.node,
        &r.container_id,
        ": > /tmp/passed && touch /tmp/ready",
    );
    ips.insert(r.ip.clone());
    c.wait_endpoints("the replica back in every map", &c.all_nodes(), &ips);
    let passed = probes(&c, r, "/tmp/passed");
    eprintln!("out after {failed} failing probes, back after {passed} passing ones");
    assert!(
        (1..=2).contains(&passed),
        "back in the endpoints before the 3rd passing probe, after {passed}"
    );
}

#[test]
fn a_lost_node_leaves_the_maps_of_every_other_node() {
    let mut c = cluster(false);
    let d = deploy_hello(&c);
    let mut ips = replica_ips(&d);
    c.wait_endpoints("hello's endpoints on every node", &c.all_nodes(), &ips);

    // The node is lost whole: its agent dies and its link to the fabric goes down (its
    // containers keep running, unreachable).
    let index = 2;
    let lost = c.nodes[index].name().to_string();
    c.nodes[index].kill9();
    c.fabric
        .cut(u32::try_from(index).expect("a small index") + 1);
    let on_lost = d
        .replica_status
        .iter()
        .find(|r| r.node == lost)
        .expect("a replica on the lost node");
    ips.remove(&on_lost.ip);
    let others: Vec<&AgentNode> = c.nodes.iter().filter(|n| n.name() != lost).collect();
    // Its endpoint leaves; the survivors stay (a replacement may join).
    poll_until(
        "the lost node's endpoint out of the others' maps",
        WAIT,
        || {
            let gone = |eps: &BTreeSet<String>| !eps.contains(&on_lost.ip) && eps.is_superset(&ips);
            (gone(&listed_endpoints(&c.api, "hello"))
                && others.iter().all(|n| gone(&nft_endpoints(n, "hello"))))
            .then_some(())
        },
    );
    let _ = &c.sched;
}

#[test]
fn teardown_leaves_no_table_flow_or_dns_listener_in_any_node() {
    let mut c = cluster(false);
    let d = deploy_hello(&c);
    let (client_node, client_id) = deploy_client(&c, IMAGE);
    c.wait_endpoints(
        "hello's endpoints on every node",
        &c.all_nodes(),
        &replica_ips(&d),
    );
    let vip: SocketAddr = format!("{}:80", d.virtual_ip).parse().unwrap();
    let from = c.node(&client_node);
    let load = Load::start(&container_netns(from, &client_id), vip, 100);
    poll_until("20 answers", WAIT, || {
        (load.replies().len() >= 20).then_some(())
    });
    let replies = load.finish();
    assert!(failures(&replies).is_empty(), "{replies:?}");
    assert!(
        !vip_flows(from, &d.virtual_ip).is_empty(),
        "the calls left flows to the VIP"
    );
    assert!(
        c.nodes.iter().all(|n| !dns_listeners(n).is_empty()),
        "every node serves DNS"
    );

    for name in ["hello", "client"] {
        c.api.delete(name);
        poll_until("the containers to go", WAIT, || {
            c.api.containers(name).is_empty().then_some(())
        });
    }
    for n in &mut c.nodes {
        assert!(n.terminate(WAIT).success(), "{}", n.log());
    }
    for n in &c.nodes {
        assert_eq!(svc_tables(n), Vec::<String>::new(), "{}", n.name());
        assert_eq!(vip_flows(n, &d.virtual_ip), "", "{}", n.name());
        assert_eq!(dns_listeners(n), "", "{}", n.name());
    }
}
