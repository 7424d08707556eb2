//! Pod CIDRs stay unique when nodes register at the same moment: twenty node identities send
//! Register to a real berth-scheduler at once (on redb and on etcd, one test each), again to
//! check each keeps its CIDR, then real agents join and run containers, and every node's CIDR
//! and every container's IP is unique.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1::node_service_client::NodeServiceClient;
use berth_proto::v1::{Capacity, RegisterRequest, Resources};
use berth_tests::agent_node::unique_node_name;
use berth_tests::cluster::{DeployApi, Fabric, SchedulerProc, all_ready, httpd_spec, start_nodes};
use berth_tests::poll_until;

const IMAGE: &str = "pod-cidrs-busybox:1";
const WAIT: Duration = Duration::from_secs(90);
/// Node identities registering at once.
const RACERS: usize = 20;
/// Real agents that join afterwards and run containers.
const AGENTS: usize = 3;
const REPLICAS: u32 = 6;
/// The scheduler's default pod network.
const POD_NETWORK_PREFIX: &str = "10.88.";

#[test]
fn pod_cidrs_and_container_ips_stay_unique_on_redb() {
    pod_cidrs_and_container_ips_stay_unique("redb");
}

#[test]
fn pod_cidrs_and_container_ips_stay_unique_on_etcd() {
    pod_cidrs_and_container_ips_stay_unique("etcd");
}

fn pod_cidrs_and_container_ips_stay_unique(store: &str) {
    let sched = SchedulerProc::start_on(store, &[]);
    let names: Vec<String> = (0..RACERS)
        .map(|i| unique_node_name(&format!("race{i}")))
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");

    // Twenty registrations released together, each on its own connection.
    let first = rt.block_on(register_at_once(&sched.endpoint(), &names));
    let distinct: BTreeSet<&String> = first.values().collect();
    assert_eq!(distinct.len(), RACERS, "duplicate pod CIDRs: {first:#?}");
    for (node, cidr) in &first {
        assert!(
            cidr.starts_with(POD_NETWORK_PREFIX) && cidr.ends_with(".0/24"),
            "{node}: {cidr} is not a /24 of the pod network"
        );
    }
    // Registering again (also all at once) keeps every node's CIDR.
    let again = rt.block_on(register_at_once(&sched.endpoint(), &names));
    assert_eq!(again, first, "CIDRs changed on re-registration");

    // Real agents join and run containers.
    let api = DeployApi::new(&sched.endpoint(), WAIT);
    // The racers never open a session: wait until none is Ready, so replicas go to agents.
    poll_until("the racing identities NotReady", WAIT, || {
        let nodes = api.nodes();
        let racers = nodes.iter().filter(|n| first.contains_key(&n.name));
        (racers.clone().count() == RACERS && racers.clone().all(|n| !n.ready)).then_some(())
    });
    let mut fabric = Fabric::new();
    let agents = start_nodes(&sched, &mut fabric, AGENTS, "cidr", IMAGE);
    let agent_names: BTreeSet<&str> = agents.iter().map(|a| a.name()).collect();
    poll_until("every agent Ready", WAIT, || {
        let nodes = api.nodes();
        let ready = nodes
            .iter()
            .filter(|n| agent_names.contains(n.name.as_str()) && n.ready)
            .count();
        (ready == AGENTS).then_some(())
    });
    api.apply(httpd_spec("cidrs", IMAGE, "v1", REPLICAS));
    api.wait("cidrs", "every replica Ready", |d| all_ready(d, REPLICAS));

    let cidrs: BTreeMap<String, String> = api
        .nodes()
        .into_iter()
        .map(|n| (n.name, n.pod_cidr))
        .collect();
    assert_eq!(cidrs.len(), RACERS + AGENTS, "{cidrs:#?}");
    let distinct: BTreeSet<&String> = cidrs.values().collect();
    assert_eq!(
        distinct.len(),
        cidrs.len(),
        "duplicate pod CIDRs: {cidrs:#?}"
    );
    for (node, cidr) in &first {
        assert_eq!(
            cidrs.get(node),
            Some(cidr),
            "{node} listed with another CIDR"
        );
    }

    let containers = api.containers("cidrs");
    assert_eq!(containers.len(), REPLICAS as usize, "{containers:#?}");
    let mut ips = BTreeSet::new();
    for c in &containers {
        let status = c.status.as_ref().expect("a container status");
        let ip = &status.ip;
        assert!(
            ips.insert(ip.clone()),
            "IP {ip} given twice: {containers:#?}"
        );
        let cidr = &cidrs[&c.node];
        let net = cidr.strip_suffix("0/24").expect("a /24");
        assert!(
            ip.starts_with(net),
            "{} on {} has {ip:?}, outside its node's {cidr}",
            status.container_id,
            c.node
        );
    }
    let used: BTreeSet<&str> = containers.iter().map(|c| c.node.as_str()).collect();
    assert!(used.len() > 1, "replicas on one node only: {used:?}");
    api.delete("cidrs");
    poll_until("the containers gone", WAIT, || {
        api.containers("cidrs").is_empty().then_some(())
    });
}

/// Registers every one of `names` at once (a barrier releases them together, each on its own
/// connection); each node's pod CIDR.
async fn register_at_once(endpoint: &str, names: &[String]) -> BTreeMap<String, String> {
    let barrier = Arc::new(tokio::sync::Barrier::new(names.len()));
    let tasks: Vec<_> = names
        .iter()
        .map(|name| {
            let (endpoint, name, barrier) = (endpoint.to_string(), name.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut client = NodeServiceClient::connect(endpoint)
                    .await
                    .expect("connect to the scheduler");
                barrier.wait().await;
                let registered = client
                    .register(RegisterRequest {
                        node_name: name.clone(),
                        capacity: Some(capacity()),
                        // No address: no routes to nodes that run nothing.
                        node_address: String::new(),
                        agent_version: "pod-cidrs test".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("register {name}: {e}"))
                    .into_inner();
                (name, registered.pod_cidr)
            })
        })
        .collect();
    let mut cidrs = BTreeMap::new();
    for task in tasks {
        let (name, cidr) = task.await.expect("a registration task");
        cidrs.insert(name, cidr);
    }
    cidrs
}

fn capacity() -> Capacity {
    let all = Resources {
        cpu_millis: 1000,
        memory_bytes: 1 << 30,
    };
    Capacity {
        total: Some(all),
        allocatable: Some(all),
        allocated: Some(Resources::default()),
    }
}
