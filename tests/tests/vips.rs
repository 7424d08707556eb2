//! Service virtual IPs are never handed out twice: two schedulers (in this process) share one
//! real etcd on loopback and take Applies of many services at once, then one stops and the
//! other carries on (a failover); every deployment's VIP is distinct and stays its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_proto::v1::deployment_service_client::DeploymentServiceClient;
use berth_proto::v1::{
    ApplyRequest, DeploymentSpec, ListDeploymentsRequest, Protocol, ServicePort,
};
use berth_scheduler::Config;
use berth_scheduler::store::etcd::EtcdStore;
use berth_tests::etcd::EtcdCluster;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A scheduler on a loopback port over the etcd at `endpoints` (keys under `prefix`); it
/// stops when the sender is dropped or fires.
async fn scheduler(
    endpoints: &[String],
    prefix: &str,
) -> (DeploymentServiceClient<Channel>, oneshot::Sender<()>) {
    let store = EtcdStore::connect(endpoints, prefix)
        .await
        .unwrap_or_else(|e| panic!("connect to etcd at {endpoints:?}: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = berth_scheduler::run(Config::default(), Arc::new(store), listener, async {
            let _ = stopped.await;
        });
        served.await.expect("the scheduler serves");
    });
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("a valid endpoint")
        .connect_lazy();
    (DeploymentServiceClient::new(channel), stop)
}

fn service(name: &str) -> DeploymentSpec {
    DeploymentSpec {
        name: name.into(),
        image: "busybox:latest".into(),
        replicas: 0,
        service_ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
            target: 8080,
            protocol: Protocol::Tcp as i32,
        }],
        ..Default::default()
    }
}

/// Applies `names` all at once, spread over `clients`.
async fn apply_all(clients: &[DeploymentServiceClient<Channel>], names: Vec<String>) {
    let tasks: Vec<_> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let mut client = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                let request = ApplyRequest {
                    spec: Some(service(&name)),
                };
                client
                    .apply(request)
                    .await
                    .unwrap_or_else(|e| panic!("apply {name}: {e}"))
                    .into_inner()
            })
        })
        .collect();
    for t in tasks {
        let applied = t.await.expect("the apply task");
        let d = applied.deployment.expect("the applied deployment");
        assert!(d.virtual_ip.starts_with("10.96."), "{d:?}");
    }
}

/// Every deployment's name and VIP, as `client`'s scheduler lists them.
async fn vips(client: &DeploymentServiceClient<Channel>) -> BTreeMap<String, String> {
    let listed = client
        .clone()
        .list(ListDeploymentsRequest {
            ..Default::default()
        })
        .await;
    let deployments = listed.expect("deployments listed").into_inner().deployments;
    deployments
        .into_iter()
        .map(|d| (d.spec.unwrap_or_default().name, d.virtual_ip))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vips_stay_distinct_across_concurrent_schedulers_and_a_failover() {
    let etcd = tokio::task::block_in_place(|| EtcdCluster::start(1));
    let prefix = format!("/berth-vips-{}", std::process::id());
    let (a, stop_a) = scheduler(&etcd.endpoints(), &prefix).await;
    let (b, _stop_b) = scheduler(&etcd.endpoints(), &prefix).await;

    let first: Vec<String> = (0..40).map(|i| format!("svc-{i}")).collect();
    apply_all(&[a.clone(), b.clone()], first).await;
    let before = vips(&b).await;
    assert_eq!(before.len(), 40, "{before:?}");

    // A failover: one scheduler goes, the other takes more Applies and re-applies of the same.
    drop(stop_a);
    let more: Vec<String> = (40..60).map(|i| format!("svc-{i}")).collect();
    apply_all(std::slice::from_ref(&b), more).await;
    apply_all(
        std::slice::from_ref(&b),
        vec!["svc-0".into(), "svc-1".into()],
    )
    .await;
    let after = vips(&b).await;
    assert_eq!(after.len(), 60, "{after:?}");
    for (name, vip) in &before {
        assert_eq!(after.get(name), Some(vip), "{name} kept its VIP");
    }
    let mut distinct: Vec<&String> = after.values().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 60, "a VIP handed out twice: {after:?}");
}
