//! What a scrape reads from the leader at that moment: deployments (kube-state-metrics'
//! shapes), nodes (capacity, allocation, containers by state, heartbeat age) and sessions.

use std::sync::atomic::AtomicU64;

use berth_proto::v1::{ContainerState, Deployment, Resources, RolloutPhase};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::DeploymentLabels;
use crate::cluster::Cluster;
use crate::controller::Controller;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    #[prometheus(flatten)]
    deployment: DeploymentLabels,
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// kube-state-metrics' resource shape: `resource` and its `unit`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    node: String,
    resource: &'static str,
    unit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    node: String,
    state: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every phase a rollout can be in, as its label value (one series each, 0 or 1).
const PHASES: [(RolloutPhase, &str); 6] = [
    (RolloutPhase::Progressing, "progressing"),
    (RolloutPhase::AwaitingApproval, "awaiting_approval"),
    (RolloutPhase::Complete, "complete"),
    (RolloutPhase::Failed, "failed"),
    (RolloutPhase::RolledBack, "rolled_back"),
    (RolloutPhase::Rejected, "rejected"),
];

/// Every container state, as its label value.
const STATES: [(ContainerState, &str); 6] = [
    (ContainerState::Pending, "pending"),
    (ContainerState::Created, "created"),
    (ContainerState::Running, "running"),
    (ContainerState::Exited, "exited"),
    (ContainerState::Failed, "failed"),
    (ContainerState::Stopping, "stopping"),
];

/// Registers the leader's families (`leader` None: a standby, which shows only that).
pub(super) fn register(r: &mut Registry, leader: Option<&Controller>) {
    let is_leader: Gauge = Gauge::default();
    is_leader.set(i64::from(leader.is_some()));
    r.register(
        "berth_scheduler_leader",
        "1 while this scheduler leads the cluster, 0 while it stands by",
        is_leader,
    );
    let Some(controller) = leader else {
        return;
    };
    register_deployments(r, &controller.statuses());
    register_nodes(r, &controller.cluster);
}

fn register_deployments(r: &mut Registry, deployments: &[(String, Deployment)]) {
    let spec: Family<DeploymentLabels, Gauge> = Family::default();
    let replicas: Family<DeploymentLabels, Gauge> = Family::default();
    let ready: Family<DeploymentLabels, Gauge> = Family::default();
    let updated: Family<DeploymentLabels, Gauge> = Family::default();
    let phase: Family<PhaseLabels, Gauge> = Family::default();
    for (name, d) in deployments {
        let labels = DeploymentLabels::of(name);
        let wanted = d.spec.as_ref().map_or(0, |s| s.replicas);
        spec.get_or_create(&labels).set(i64::from(wanted));
        replicas.get_or_create(&labels).set(i64::from(d.replicas));
        ready
            .get_or_create(&labels)
            .set(i64::from(d.ready_replicas));
        updated
            .get_or_create(&labels)
            .set(i64::from(d.updated_replicas));
        for (p, value) in PHASES {
            let key = PhaseLabels {
                deployment: labels.clone(),
                phase: value,
            };
            phase
                .get_or_create(&key)
                .set(i64::from(d.phase == p as i32));
        }
    }
    r.register(
        "berth_deployment_spec_replicas",
        "Number of desired replicas for a deployment",
        spec,
    );
    r.register(
        "berth_deployment_status_replicas",
        "Number of replicas a deployment has, of any revision",
        replicas,
    );
    r.register(
        "berth_deployment_status_replicas_ready",
        "Number of ready replicas of a deployment's current revision",
        ready,
    );
    r.register(
        "berth_deployment_status_replicas_updated",
        "Number of replicas of a deployment's current revision",
        updated,
    );
    r.register(
        "berth_deployment_rollout_phase",
        "The phase of a deployment's rollout: 1 for the current one, 0 for the others",
        phase,
    );
}

/// Millicores as cores, a ratio (precision loss is the point).
#[allow(clippy::cast_precision_loss)]
fn cores(millis: u64) -> f64 {
    millis as f64 / 1000.0
}

/// Bytes as a float gauge value (exact up to 2^53 bytes: 8 PiB).
#[allow(clippy::cast_precision_loss)]
fn bytes(n: u64) -> f64 {
    n as f64
}

fn set_resources(family: &Family<ResourceLabels, FloatGauge>, node: &str, r: Resources) {
    let cpu = ResourceLabels {
        node: node.to_string(),
        resource: "cpu",
        unit: "core",
    };
    family.get_or_create(&cpu).set(cores(r.cpu_millis));
    let memory = ResourceLabels {
        node: node.to_string(),
        resource: "memory",
        unit: "byte",
    };
    family.get_or_create(&memory).set(bytes(r.memory_bytes));
}

fn register_nodes(r: &mut Registry, cluster: &Cluster) {
    let capacity: Family<ResourceLabels, FloatGauge> = Family::default();
    let allocatable: Family<ResourceLabels, FloatGauge> = Family::default();
    let allocated: Family<ResourceLabels, FloatGauge> = Family::default();
    let containers: Family<StateLabels, Gauge> = Family::default();
    let ready: Family<NodeLabels, Gauge> = Family::default();
    let age: Family<NodeLabels, FloatGauge> = Family::default();
    let sessions: Gauge = Gauge::default();
    cluster.with_nodes(|nodes| {
        for (name, n) in nodes {
            let c = n.capacity;
            set_resources(&capacity, name, c.total.unwrap_or_default());
            set_resources(&allocatable, name, crate::cluster::allocatable(n));
            set_resources(&allocated, name, c.allocated.unwrap_or_default());
            for (state, value) in STATES {
                let count = n.containers.values().filter(|s| s.state == state as i32);
                let key = StateLabels {
                    node: name.clone(),
                    state: value,
                };
                containers
                    .get_or_create(&key)
                    .set(i64::try_from(count.count()).unwrap_or(i64::MAX));
            }
            let node = NodeLabels { node: name.clone() };
            ready
                .get_or_create(&node)
                .set(i64::from(cluster.is_ready(n)));
            age.get_or_create(&node)
                .set(n.last_heartbeat.elapsed().as_secs_f64());
            if n.downlink.is_some() {
                sessions.inc();
            }
        }
    });
    r.register(
        "berth_node_capacity",
        "A node's total resources (cpu in cores, memory in bytes), as its agent reports them",
        capacity,
    );
    r.register(
        "berth_node_allocatable",
        "A node's resources that replicas may use (capacity less the agent's reservation)",
        allocatable,
    );
    r.register(
        "berth_node_allocated",
        "A node's resources its replicas request",
        allocated,
    );
    r.register(
        "berth_node_containers",
        "A node's containers by state, as its agent reports them",
        containers,
    );
    r.register(
        "berth_node_ready",
        "1 while a node heartbeats within the grace period, 0 otherwise",
        ready,
    );
    r.register(
        "berth_node_heartbeat_age_seconds",
        "Time since a node's last heartbeat",
        age,
    );
    r.register(
        "berth_scheduler_sessions",
        "Agent sessions open on this scheduler",
        sessions,
    );
}
