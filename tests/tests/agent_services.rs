//! berth-agent's service load balancer end to end: a real agent process runs httpd replicas,
//! the harness sends ServiceSets down the session stream, and the agent programs its node's
//! nft table, acknowledges each set and reports it in heartbeats; a client container reaches
//! the replicas through the virtual IP with curl.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_proto::v1::{ContainerState, Endpoint, Protocol, Service, ServicePort};
use berth_tests::agent_node::{AgentNode, AgentOptions, unique_node_name};
use berth_tests::fake_scheduler::{FakeScheduler, assignment};
use berth_tests::{Berth, busybox_image};

const WAIT: Duration = Duration::from_secs(60);
const IMAGE: &str = "agent-svc-busybox:1";
const VIP: &str = "10.96.31.7";
const HTTPD: &str = "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www";

fn hello(endpoints: &[(&str, &str)]) -> Service {
    Service {
        name: "hello".into(),
        virtual_ip: VIP.into(),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
            target: 8080,
            protocol: Protocol::Tcp as i32,
        }],
        endpoints: endpoints
            .iter()
            .map(|(id, ip)| Endpoint {
                container_id: (*id).into(),
                node: "n".into(),
                ip: (*ip).into(),
            })
            .collect(),
    }
}

/// Waits until the node acknowledged service generation `generation` and says so in a
/// heartbeat.
fn wait_services_applied(sched: &FakeScheduler, node: &str, generation: u64) {
    sched.wait_node(node, &format!("ServicesApplied {generation}"), WAIT, |r| {
        r.services_applied.contains(&generation).then_some(())
    });
    sched.wait_for(node, "applied_service_generation", WAIT, |h| {
        (h.applied_service_generation >= generation).then_some(())
    });
}

#[test]
fn the_agent_balances_a_service_sent_down_the_session_and_acknowledges_it() {
    let sched = FakeScheduler::start();
    let berth = Berth::new();
    busybox_image(&berth, IMAGE);
    let name = unique_node_name("svc");
    sched.set_pod_cidr(&name, "10.91.31.0/24");
    let n = AgentNode::start_in(berth, &sched, &name, AgentOptions::default());
    let mut replicas = Vec::new();
    for id in ["hello-1", "hello-2"] {
        let mut a = assignment(id, IMAGE);
        a.command = vec!["sh".into(), "-c".into(), HTTPD.into()];
        replicas.push(a);
    }
    let mut client = assignment("client", IMAGE);
    client.command = vec!["sleep".into(), "3600".into()];
    replicas.push(client);
    sched.assign(n.name(), replicas);
    let ip = |id: &str| {
        sched
            .wait_state(n.name(), id, ContainerState::Running, WAIT)
            .ip
    };
    let (ip1, ip2) = (ip("hello-1"), ip("hello-2"));
    ip("client");

    let generation = sched.services(
        n.name(),
        vec![hello(&[("hello-1", &ip1), ("hello-2", &ip2)])],
    );
    wait_services_applied(&sched, n.name(), generation);
    // curl from the host, inside the client container's network namespace.
    let client_netns = n.data_dir().join("agent/netns/client");
    let curl = || {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", client_netns.display()))
            .args(["curl", "-sSf", "-m", "3", &format!("http://{VIP}/")])
            .output()
            .expect("run nsenter curl");
        assert!(out.status.success(), "curl via the VIP: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let seen: BTreeSet<String> = (0..30).map(|_| curl()).collect();
    let both: BTreeSet<String> = ["hello-from-hello-1", "hello-from-hello-2"]
        .map(String::from)
        .into();
    assert_eq!(seen, both, "30 calls reach both replicas");

    // hello-2 leaves the endpoints: every call goes to hello-1.
    let generation = sched.services(n.name(), vec![hello(&[("hello-1", &ip1)])]);
    wait_services_applied(&sched, n.name(), generation);
    for _ in 0..10 {
        assert_eq!(curl(), "hello-from-hello-1");
    }
    sched.assign(n.name(), vec![]);
    for id in ["hello-1", "hello-2", "client"] {
        sched.wait_gone(n.name(), id, WAIT);
    }
}
