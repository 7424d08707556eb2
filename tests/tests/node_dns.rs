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

/// Issue 16: a container in environment staging gets `search staging.berth berth`, so plain
/// `hello` resolves to staging's service; another environment's is reached by its full name,
/// and the default environment's also as `NAME.default.berth`.
#[test]
fn a_container_in_an_environment_resolves_its_own_services_first() {
    let sched = FakeScheduler::start();
    let berth = Berth::new();
    busybox_image(&berth, IMAGE);
    let name = unique_node_name("dnsenv");
    sched.set_pod_cidr(&name, "10.93.15.0/24");
    sched.assign(&name, vec![]);
    let opts = AgentOptions {
        extra_args: ["--stop-grace", "1"].map(String::from).to_vec(),
        ..AgentOptions::default()
    };
    let mut node = AgentNode::start_in(berth, &sched, &name, opts);
    let service = |name: &str, vip: &str| berth_proto::v1::Service {
        name: name.into(),
        virtual_ip: vip.into(),
        ports: Vec::new(),
        endpoints: Vec::new(),
    };
    sched.services(
        &name,
        vec![
            service("hello", "10.96.15.10"),
            service("hello.staging", "10.96.15.11"),
            service("hello.production", "10.96.15.12"),
        ],
    );
    let mut client = assignment("client.staging-1-abc123", IMAGE);
    client.deployment = "client.staging".into();
    client.environment = "staging".into();
    client.command = vec!["sleep".into(), "1000".into()];
    sched.assign(&name, vec![client]);
    sched.wait_state(
        &name,
        "client.staging-1-abc123",
        ContainerState::Running,
        WAIT,
    );
    let agent = node.endpoint_url();
    let exec = |script: &str| {
        let out = node
            .berth()
            .cmd([
                "exec",
                "--agent",
                &agent,
                "client.staging-1-abc123",
                "sh",
                "-c",
                script,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let conf = exec("cat /etc/resolv.conf");
    assert!(
        conf.contains("\nsearch staging.berth berth\n"),
        "the environment's domain first: {conf}"
    );
    for (query, vip) in [
        ("hello", "10.96.15.11"),
        ("hello.production.berth.", "10.96.15.12"),
        ("hello.default.berth.", "10.96.15.10"),
        ("hello.berth.", "10.96.15.10"),
    ] {
        let answer =
            berth_tests::poll_until(&format!("{query} through the node DNS"), WAIT, || {
                let text = exec(&format!("busybox nslookup -type=a {query}"));
                text.contains("Address").then_some(text)
            });
        assert!(answer.contains(vip), "{query} is {vip}: {answer}");
    }
    sched.assign(&name, vec![]);
    sched.wait_gone(&name, "client.staging-1-abc123", WAIT);
    assert!(node.terminate(WAIT).success(), "{}", node.log());
}
