//! The node DNS server end to end: a container that a real agent starts gets a resolv.conf
//! naming the node's gateway, and resolves through the agent's DNS server there: a name
//! outside the cluster is forwarded to a resolver this test runs on loopback (never the
//! internet), a missing service name is NXDOMAIN; a stopped agent leaves no listener.

use std::time::Duration;

use berth_proto::v1::ContainerState;
use berth_tests::agent_node::{AgentNode, AgentOptions, unique_node_name};
use berth_tests::fake_scheduler::{FakeScheduler, assignment};
use berth_tests::services::dns_listeners;
use berth_tests::{Berth, UPSTREAM_ADDR, busybox_image, dns_upstream};

const WAIT: Duration = Duration::from_secs(60);
const IMAGE: &str = "dns-busybox:1";

#[test]
fn a_container_resolves_through_the_node_dns_on_its_gateway() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (upstream_addr, mut upstream_server) = runtime.block_on(dns_upstream());
    let sched = FakeScheduler::start();
    let berth = Berth::new();
    busybox_image(&berth, IMAGE);
    let name = unique_node_name("dns");
    sched.set_pod_cidr(&name, "10.93.14.0/24");
    sched.assign(&name, vec![]);
    let opts = AgentOptions {
        extra_args: [
            "--stop-grace",
            "1",
            "--dns-upstream",
            &upstream_addr.to_string(),
        ]
        .map(String::from)
        .to_vec(),
        ..AgentOptions::default()
    };
    let mut node = AgentNode::start_in(berth, &sched, &name, opts);
    let mut client = assignment("client", IMAGE);
    client.command = vec!["sleep".into(), "1000".into()];
    sched.assign(&name, vec![client]);
    sched.wait_state(&name, "client", ContainerState::Running, WAIT);
    let agent = node.endpoint_url();
    let exec = |script: &str| {
        let out = node
            .berth()
            .cmd(["exec", "--agent", &agent, "client", "sh", "-c", script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };

    assert_eq!(
        exec("cat /etc/resolv.conf"),
        "# berth: the node DNS answers services as NAME and NAME.berth\n\
         nameserver 10.93.14.1\nsearch berth\noptions ndots:1\n"
    );
    // The server comes up just after the node network: poll for the first answer.
    let forwarded = berth_tests::poll_until("www.example.test through the node DNS", WAIT, || {
        let text = exec("busybox nslookup www.example.test");
        text.contains(UPSTREAM_ADDR).then_some(text)
    });
    assert!(
        forwarded.contains("10.93.14.1"),
        "answered by the gateway: {forwarded}"
    );
    let missing = exec("busybox nslookup -type=a nope.berth.");
    assert!(missing.contains("NXDOMAIN"), "{missing}");

    let serving = dns_listeners(&node);
    assert!(
        serving.contains("udp") && serving.contains("tcp") && serving.contains("10.93.14.1:53"),
        "UDP and TCP on the gateway: {serving}"
    );

    sched.assign(&name, vec![]);
    sched.wait_gone(&name, "client", WAIT);
    assert!(node.terminate(WAIT).success(), "{}", node.log());
    assert_eq!(
        dns_listeners(&node),
        "",
        "no DNS listener outlives the agent"
    );
    drop(node);
    runtime
        .block_on(upstream_server.shutdown_gracefully())
        .unwrap();
}
