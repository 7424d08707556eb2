//! Services: every deployment with service ports is a Service on its virtual IP, balanced
//! over its endpoints, and replicas being removed drain out of the nodes' load balancers
//! before they are stopped.
//!
//! An endpoint is a replica whose node is Ready and whose container runs, passes readiness
//! and has a pod IP. A replica the control loop removes (rollout, scale-down, deletion) leaves
//! its store record at once, so the next ServiceSet no longer has it; its assignment stays
//! (the container keeps serving open connections) until every Ready node acknowledges a set
//! without it, or the drain timeout passes. Only then is it withdrawn, which makes its agent
//! send SIGTERM (then SIGKILL after the grace period). This is the ordering Kubernetes lacks
//! (kubernetes#43576). The drain list lives in memory: after a failover, replicas being
//! drained are withdrawn at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use berth_proto::v1::{ContainerState, ContainerStatus, Endpoint, Service};
use tokio::time::Instant;

use crate::records::{DeploymentRecord, ReplicaRecord};

/// The services of `deployments` with their endpoints among `replicas` (on `ready_nodes`, as
/// `statuses` report them), ordered by name; endpoints by container id.
pub(crate) fn compute(
    deployments: &BTreeMap<String, (DeploymentRecord, u64)>,
    replicas: &[ReplicaRecord],
    statuses: &HashMap<String, (String, ContainerStatus)>,
    ready_nodes: &BTreeSet<String>,
) -> Vec<Service> {
    deployments
        .iter()
        .filter_map(|(name, (rec, _))| {
            let spec = rec.spec.as_ref()?;
            if spec.service_ports.is_empty() || rec.virtual_ip.is_empty() {
                return None;
            }
            let mut endpoints: Vec<Endpoint> = replicas
                .iter()
                .filter(|r| r.deployment == *name && ready_nodes.contains(&r.node))
                .filter_map(|r| endpoint(r, statuses.get(&r.container_id)))
                .collect();
            endpoints.sort_by(|a, b| a.container_id.cmp(&b.container_id));
            Some(Service {
                name: name.clone(),
                virtual_ip: rec.virtual_ip.clone(),
                ports: spec.service_ports.clone(),
                endpoints,
            })
        })
        .collect()
}

/// `r` as an endpoint if its node reports it running, ready and with a pod IP.
fn endpoint(r: &ReplicaRecord, status: Option<&(String, ContainerStatus)>) -> Option<Endpoint> {
    let (node, s) = status?;
    let serving =
        *node == r.node && s.state == ContainerState::Running as i32 && s.ready && !s.ip.is_empty();
    serving.then(|| Endpoint {
        container_id: r.container_id.clone(),
        node: r.node.clone(),
        ip: s.ip.clone(),
    })
}

/// A replica removed from the store whose assignment stays until it has drained.
#[derive(Debug, Clone)]
struct Draining {
    replica: ReplicaRecord,
    since: Instant,
    /// The first ServiceSet generation sent without it (None until one is sent).
    generation: Option<u64>,
}

/// The replicas being drained, by container id.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    replicas: BTreeMap<String, Draining>,
}

impl Drain {
    /// Starts draining `replica` (removed from the store just now).
    pub(crate) fn start(&mut self, replica: ReplicaRecord) {
        let id = replica.container_id.clone();
        tracing::info!(replica = %id, node = %replica.node, "draining before stop");
        self.replicas.entry(id).or_insert(Draining {
            replica,
            since: Instant::now(),
            generation: None,
        });
    }

    /// Notes that ServiceSet `generation`, now sent, has none of the draining replicas.
    pub(crate) fn sent(&mut self, generation: u64) {
        for d in self.replicas.values_mut() {
            d.generation.get_or_insert(generation);
        }
    }

    /// Ends the drain of every replica whose set every Ready node has acknowledged
    /// (`acked(generation)`), or that has drained for `timeout`.
    pub(crate) fn release(&mut self, timeout: Duration, acked: impl Fn(u64) -> bool) {
        self.replicas.retain(|id, d| {
            let confirmed = d.generation.is_some_and(&acked);
            let expired = d.since.elapsed() >= timeout;
            if confirmed || expired {
                tracing::info!(replica = %id, confirmed, "drained: stopping it");
            }
            !(confirmed || expired)
        });
    }

    /// The replicas still draining (their assignments stay).
    pub(crate) fn replicas(&self) -> Vec<ReplicaRecord> {
        self.replicas.values().map(|d| d.replica.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::v1::{DeploymentSpec, Protocol, ServicePort};

    use super::*;

    fn replica(id: &str, node: &str) -> ReplicaRecord {
        ReplicaRecord {
            container_id: id.into(),
            deployment: "web".into(),
            revision: 1,
            node: node.into(),
            created_at_ms: 0,
        }
    }

    fn status(node: &str, ready: bool, ip: &str) -> (String, ContainerStatus) {
        let s = ContainerStatus {
            state: ContainerState::Running as i32,
            ready,
            ip: ip.into(),
            ..Default::default()
        };
        (node.into(), s)
    }

    #[test]
    fn endpoints_are_ready_replicas_with_an_ip_on_ready_nodes() {
        let spec = DeploymentSpec {
            name: "web".into(),
            service_ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                target: 8080,
                protocol: Protocol::Tcp as i32,
            }],
            ..Default::default()
        };
        let rec = DeploymentRecord {
            spec: Some(spec),
            virtual_ip: "10.96.0.1".into(),
            ..Default::default()
        };
        let deployments = BTreeMap::from([("web".to_string(), (rec, 1))]);
        let replicas = ["a", "b", "c", "d", "e"].map(|id| replica(id, "n1"));
        let mut replicas = replicas.to_vec();
        replicas[4].node = "n2".into();
        let statuses = HashMap::from([
            ("a".to_string(), status("n1", true, "10.88.0.2")),
            ("b".to_string(), status("n1", false, "10.88.0.3")),
            ("c".to_string(), status("n1", true, "")),
            // Reported by another node than the one it is placed on: stale.
            ("d".to_string(), status("n2", true, "10.88.0.5")),
            ("e".to_string(), status("n2", true, "10.88.1.2")),
        ]);
        let ready = BTreeSet::from(["n1".to_string()]);
        let services = compute(&deployments, &replicas, &statuses, &ready);
        assert_eq!(services.len(), 1);
        let ips: Vec<_> = services[0]
            .endpoints
            .iter()
            .map(|e| e.ip.as_str())
            .collect();
        assert_eq!(
            ips,
            ["10.88.0.2"],
            "only a: b unready, c no IP, d stale, e on a NotReady node"
        );
        assert_eq!(services[0].virtual_ip, "10.96.0.1");
    }

    /// The drain rule under tokio's paused clock: a replica is released once every Ready
    /// node acknowledged a set without it, or after the timeout, never before either.
    #[tokio::test(start_paused = true)]
    async fn a_replica_drains_until_acknowledged_or_the_timeout() {
        let timeout = Duration::from_secs(2);
        let mut drain = Drain::default();
        drain.start(replica("a", "n1"));
        // No set sent without it yet: not even an acknowledgement of everything releases it.
        drain.release(timeout, |_| true);
        assert_eq!(drain.replicas().len(), 1);
        drain.sent(7);
        drain.start(replica("b", "n1"));
        drain.sent(8);
        // Nodes have applied 7: a goes, b (first left out of 8) stays.
        drain.release(timeout, |g| g <= 7);
        let left: Vec<_> = drain
            .replicas()
            .into_iter()
            .map(|r| r.container_id)
            .collect();
        assert_eq!(left, ["b"]);
        tokio::time::advance(timeout - Duration::from_millis(1)).await;
        drain.release(timeout, |g| g <= 7);
        assert_eq!(drain.replicas().len(), 1, "still within the timeout");
        tokio::time::advance(Duration::from_millis(1)).await;
        drain.release(timeout, |g| g <= 7);
        assert!(drain.replicas().is_empty(), "released by the timeout");
    }
}
