//! The live picture of the nodes: sessions, heartbeats and the containers each reports.
//! Not persisted: it rebuilds itself as agents reconnect.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use berth_proto::v1::{
    Assignment, AssignmentSet, Capacity, ClusterContainer, ContainerState, ContainerStatus,
    Deployment, NodeInfo, ReplicaStatus, Resources, SchedulerMessage, Service, ServiceSet,
    scheduler_message,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::error::SchedError;
use crate::files::delivery::{Delivery, FileRef};
use crate::records::NodeRecord;

/// What goes down a node's session stream (the gRPC handler frames it).
pub(crate) type Downlink = mpsc::Sender<SchedulerMessage>;

#[derive(Debug)]
pub(crate) struct NodeState {
    pub record: NodeRecord,
    pub session: u64,
    pub last_heartbeat: Instant,
    pub capacity: Capacity,
    pub containers: HashMap<String, ContainerStatus>,
    pub downlink: Option<Downlink>,
    /// The assignments last sent (or to send when the node connects).
    pub assignments: Vec<Assignment>,
    /// Assignments taken away whose containers the node still reports (being stopped): their
    /// host ports and resources are not free yet.
    pub departing: HashMap<String, Assignment>,
    pub generation: u64,
    /// The ServiceSet generation the node acknowledged applying in this session.
    pub services_applied: u64,
    /// The configs and secrets last sent (or to send when the node connects); None until its
    /// assignments first use any.
    pub files: Option<Delivery>,
}

/// The services as last sent to the nodes.
#[derive(Debug, Default)]
struct Services {
    generation: u64,
    services: Vec<Service>,
}

#[derive(Debug)]
pub(crate) struct Cluster {
    nodes: Mutex<BTreeMap<String, NodeState>>,
    /// Wakes the controller: a heartbeat, an event, a registration.
    pub changed: Notify,
    pub heartbeat_interval: Duration,
    /// A node with no heartbeat for this long is NotReady.
    pub grace: Duration,
    next_session: Mutex<u64>,
    next_generation: Mutex<u64>,
    services: Mutex<Services>,
    started: Instant,
}

impl Cluster {
    pub(crate) fn new(heartbeat_interval: Duration, grace: Duration) -> Self {
        Self {
            nodes: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            heartbeat_interval,
            grace,
            next_session: Mutex::new(0),
            next_generation: Mutex::new(0),
            services: Mutex::new(Services {
                // Above any generation an earlier scheduler sent (agents ignore older sets).
                generation: session_floor(Instant::now()),
                services: Vec::new(),
            }),
            started: Instant::now(),
        }
    }

    /// A new registration: a new session number; the node's open stream (if any) is stale.
    pub(crate) fn register(&self, record: NodeRecord, capacity: Capacity) -> u64 {
        let session = {
            let mut s = self.next_session.lock().unwrap();
            // Distinct across scheduler restarts too: a stale Hello never matches.
            *s = (*s).max(session_floor(self.started)) + 1;
            *s
        };
        let mut nodes = self.nodes.lock().unwrap();
        match nodes.get_mut(&record.name) {
            Some(n) => {
                n.record = record;
                n.session = session;
                n.capacity = capacity;
                n.last_heartbeat = Instant::now();
                n.downlink = None;
                n.services_applied = 0;
            }
            None => {
                nodes.insert(
                    record.name.clone(),
                    NodeState {
                        record,
                        session,
                        last_heartbeat: Instant::now(),
                        capacity,
                        containers: HashMap::new(),
                        downlink: None,
                        assignments: Vec::new(),
                        departing: HashMap::new(),
                        generation: 0,
                        services_applied: 0,
                        files: None,
                    },
                );
            }
        }
        drop(nodes);
        self.changed.notify_one();
        session
    }

    /// Opens the node's session if `session` is its current one; returns what to send first.
    pub(crate) fn connect(
        &self,
        node: &str,
        session: u64,
        downlink: Downlink,
    ) -> Result<Vec<SchedulerMessage>, SchedError> {
        let mut nodes = self.nodes.lock().unwrap();
        let n = nodes.get_mut(node).ok_or_else(|| {
            SchedError::FailedPrecondition(format!("node {node} is not registered"))
        })?;
        if n.session != session {
            return Err(SchedError::FailedPrecondition(format!(
                "session {session} of node {node} is stale (current {}): register again",
                n.session
            )));
        }
        n.downlink = Some(downlink);
        n.last_heartbeat = Instant::now();
        let generation = self.bump();
        n.generation = generation;
        let services = self.services.lock().unwrap();
        // Files before the assignments that mount them.
        let files = n.files.as_mut().map(|f| f.message(generation));
        let first = files
            .into_iter()
            .chain([
                assignment_message(generation, &n.assignments),
                service_message(services.generation, &services.services),
            ])
            .collect();
        drop(services);
        drop(nodes);
        self.changed.notify_one();
        Ok(first)
    }

    pub(crate) fn disconnect(&self, node: &str, session: u64) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(node)
            && n.session == session
        {
            n.downlink = None;
        }
        self.changed.notify_one();
    }

    pub(crate) fn heartbeat(
        &self,
        node: &str,
        session: u64,
        capacity: Capacity,
        containers: Vec<ContainerStatus>,
        services_applied: u64,
    ) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(node)
            && n.session == session
        {
            n.last_heartbeat = Instant::now();
            n.services_applied = n.services_applied.max(services_applied);
            n.capacity = capacity;
            n.containers = containers
                .into_iter()
                .map(|c| (c.container_id.clone(), c))
                .collect();
            let reported = &n.containers;
            n.departing.retain(|id, _| reported.contains_key(id));
        }
        self.changed.notify_one();
    }

    pub(crate) fn event(&self, node: &str, session: u64, status: ContainerStatus) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(node)
            && n.session == session
        {
            n.containers.insert(status.container_id.clone(), status);
        }
        self.changed.notify_one();
    }

    /// The node applied ServiceSet `generation` (its acknowledgement).
    pub(crate) fn services_applied(&self, node: &str, session: u64, generation: u64) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(node)
            && n.session == session
        {
            n.services_applied = n.services_applied.max(generation);
        }
        self.changed.notify_one();
    }

    /// Sends `services` to every node when they differ from the last set sent; returns the
    /// generation of the set the nodes now get.
    pub(crate) fn publish_services(&self, services: Vec<Service>) -> u64 {
        let mut current = self.services.lock().unwrap();
        if current.services == services {
            return current.generation;
        }
        current.generation += 1;
        current.services = services;
        let generation = current.generation;
        let msg = service_message(generation, &current.services);
        // Not under the services lock: `connect` takes the nodes lock, then this one.
        drop(current);
        tracing::debug!(generation, "service set changed");
        self.broadcast(&msg);
        generation
    }

    /// The services as last sent.
    pub(crate) fn services(&self) -> Vec<Service> {
        self.services.lock().unwrap().services.clone()
    }

    /// Whether every Ready node has applied ServiceSet `generation` or a later one.
    pub(crate) fn services_acked(&self, generation: u64) -> bool {
        self.with_nodes(|nodes| {
            nodes
                .values()
                .filter(|n| self.is_ready(n))
                .all(|n| n.services_applied >= generation)
        })
    }

    fn bump(&self) -> u64 {
        let mut g = self.next_generation.lock().unwrap();
        *g += 1;
        *g
    }

    /// Sets the node's assignments and sends them when they changed.
    pub(crate) fn assign(&self, node: &str, mut assignments: Vec<Assignment>) {
        assignments.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        let generation = self.bump();
        let mut nodes = self.nodes.lock().unwrap();
        let Some(n) = nodes.get_mut(node) else { return };
        if n.assignments == assignments {
            return;
        }
        for gone in n
            .assignments
            .iter()
            .filter(|a| !assignments.iter().any(|b| b.container_id == a.container_id))
        {
            if n.containers.contains_key(&gone.container_id) {
                n.departing.insert(gone.container_id.clone(), gone.clone());
            }
        }
        n.assignments = assignments;
        n.generation = generation;
        if let Some(tx) = &n.downlink
            && tx
                .try_send(assignment_message(generation, &n.assignments))
                .is_err()
        {
            // A full or closed stream: the agent gets the whole set again when it reconnects.
            n.downlink = None;
        }
    }

    /// The config and secret versions the node was last sent (empty: none yet).
    pub(crate) fn files_of(&self, node: &str) -> BTreeSet<FileRef> {
        self.with_nodes(|nodes| {
            nodes
                .get(node)
                .and_then(|n| n.files.as_ref())
                .map(|f| f.refs.clone())
                .unwrap_or_default()
        })
    }

    /// Sets the node's files and sends them; the caller sends the assignments that use them
    /// after this (the session stream keeps the order).
    pub(crate) fn send_files(&self, node: &str, mut files: Delivery) {
        let generation = self.bump();
        let mut nodes = self.nodes.lock().unwrap();
        let Some(n) = nodes.get_mut(node) else { return };
        if let Some(tx) = &n.downlink
            && tx.try_send(files.message(generation)).is_err()
        {
            // As in `assign`: the whole set goes again when the agent reconnects.
            n.downlink = None;
        }
        // The previous set's secret values are wiped as it drops.
        n.files = Some(files);
    }

    /// Sends a message to every connected node.
    pub(crate) fn broadcast(&self, msg: &SchedulerMessage) {
        for n in self.nodes.lock().unwrap().values_mut() {
            if let Some(tx) = &n.downlink
                && tx.try_send(msg.clone()).is_err()
            {
                n.downlink = None;
            }
        }
    }

    /// Whether a node has heartbeated within the grace period (the scheduler's own start
    /// counts as a heartbeat, so a restart does not declare every node lost).
    pub(crate) fn is_ready(&self, n: &NodeState) -> bool {
        n.downlink.is_some() && n.last_heartbeat.elapsed() <= self.grace
    }

    pub(crate) fn with_nodes<T>(&self, f: impl FnOnce(&BTreeMap<String, NodeState>) -> T) -> T {
        f(&self.nodes.lock().unwrap())
    }

    /// Adds nodes known from the store (after a restart) until their agents reconnect; they
    /// get `patience` on top of the grace period before they count as lost.
    pub(crate) fn remember(&self, record: NodeRecord, patience: Duration) {
        let mut nodes = self.nodes.lock().unwrap();
        nodes
            .entry(record.name.clone())
            .or_insert_with(|| NodeState {
                record,
                session: 0,
                last_heartbeat: Instant::now() + patience,
                capacity: Capacity::default(),
                containers: HashMap::new(),
                downlink: None,
                assignments: Vec::new(),
                departing: HashMap::new(),
                generation: 0,
                services_applied: 0,
                files: None,
            });
    }
}

/// Read-only views of the nodes for DeploymentService (not the control loop's own).
impl Cluster {
    /// Each node's name and the most it can allocate (as it last reported, else as recorded).
    pub(crate) fn allocatable(&self) -> Vec<(String, Resources)> {
        self.with_nodes(|nodes| {
            nodes
                .values()
                .map(|n| (n.record.name.clone(), allocatable(n)))
                .collect()
        })
    }

    /// What ListNodes reports, with heartbeat times on the wall clock `now`.
    pub(crate) fn node_infos(&self, now: i64) -> Vec<NodeInfo> {
        self.with_nodes(|nodes| {
            nodes
                .values()
                .map(|n| NodeInfo {
                    name: n.record.name.clone(),
                    labels: n.record.labels.clone().into_iter().collect(),
                    capacity: Some(n.capacity),
                    ready: self.is_ready(n),
                    pod_cidr: n.record.pod_cidr.clone(),
                    address: n.record.address.clone(),
                    agent_endpoint: n.record.agent_endpoint.clone(),
                    last_heartbeat_ms: now.saturating_sub(
                        i64::try_from(n.last_heartbeat.elapsed().as_millis()).unwrap_or(i64::MAX),
                    ),
                    containers: u32::try_from(n.containers.len()).unwrap_or(u32::MAX),
                })
                .collect()
        })
    }

    /// Every container the nodes report (only those of deployment `only`, unless empty),
    /// ordered by id.
    pub(crate) fn containers(&self, only: &str) -> Vec<ClusterContainer> {
        let mut containers = self.with_nodes(|nodes| {
            nodes
                .values()
                .flat_map(|n| {
                    n.containers.values().map(|s| ClusterContainer {
                        node: n.record.name.clone(),
                        status: Some(s.clone()),
                    })
                })
                .filter(|c| {
                    only.is_empty() || c.status.as_ref().is_some_and(|s| s.deployment == only)
                })
                .collect::<Vec<_>>()
        });
        containers.sort_by(|a, b| {
            let id = |c: &ClusterContainer| c.status.as_ref().map(|s| s.container_id.clone());
            id(a).cmp(&id(b))
        });
        containers
    }

    /// The container `target` names and its node's agent endpoint. `target` is a container
    /// id or a deployment, whose described state `deployment` (if any) picks one of its
    /// replicas of the current revision: running ones (ready first) before others.
    pub(crate) fn locate(
        &self,
        target: &str,
        deployment: Option<&Deployment>,
    ) -> Result<(String, String), SchedError> {
        let wanted = deployment
            .and_then(preferred_replica)
            .unwrap_or_else(|| target.to_string());
        // A container id, or (no current replica known) any container of the deployment.
        let found = self.with_nodes(|nodes| {
            let mut candidates: Vec<(String, String, String)> = nodes
                .values()
                .flat_map(|n| {
                    n.containers.values().map(|s| {
                        (
                            s.container_id.clone(),
                            s.deployment.clone(),
                            n.record.agent_endpoint.clone(),
                        )
                    })
                })
                .filter(|(id, dep, _)| *id == wanted || *dep == target)
                .collect();
            // The exact id first, then by id.
            candidates.sort_by_key(|(id, _, _)| (*id != wanted, id.clone()));
            candidates.into_iter().next()
        });
        let Some((id, _, endpoint)) = found else {
            return Err(SchedError::NotFound {
                what: format!("container or deployment {target}"),
            });
        };
        Ok((id, endpoint))
    }
}

/// The most a node can allocate: as it last reported, else as recorded at registration.
pub(crate) fn allocatable(n: &NodeState) -> Resources {
    n.capacity
        .allocatable
        .or(n.record.allocatable)
        .unwrap_or_default()
}

/// One of the deployment's placed replicas of the current revision: running ones (ready
/// first) before others, then by id.
fn preferred_replica(d: &Deployment) -> Option<String> {
    let mut current: Vec<&ReplicaStatus> = d
        .replica_status
        .iter()
        .filter(|r| r.revision == d.revision && !r.node.is_empty())
        .collect();
    current.sort_by_key(|r| {
        (
            !r.ready,
            r.state != ContainerState::Running as i32,
            r.container_id.clone(),
        )
    });
    current.first().map(|r| r.container_id.clone())
}

fn assignment_message(generation: u64, assignments: &[Assignment]) -> SchedulerMessage {
    SchedulerMessage {
        msg: Some(scheduler_message::Msg::Assignments(AssignmentSet {
            generation,
            assignments: assignments.to_vec(),
        })),
    }
}

fn service_message(generation: u64, services: &[Service]) -> SchedulerMessage {
    SchedulerMessage {
        msg: Some(scheduler_message::Msg::Services(ServiceSet {
            generation,
            services: services.to_vec(),
        })),
    }
}

/// Where session numbers start: distinct across scheduler restarts (the wall clock in
/// microseconds, plus the time since this scheduler started), so a stale Hello never matches.
fn session_floor(started: Instant) -> u64 {
    let since_start = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let wall_us = u64::try_from(now_ms()).unwrap_or(0).saturating_mul(1_000);
    since_start.saturating_add(wall_us)
}

#[cfg(test)]
mod tests {
    use berth_proto::v1::Endpoint;

    use super::*;

    fn web(endpoints: &[&str]) -> Service {
        Service {
            name: "web".into(),
            virtual_ip: "10.96.0.1".into(),
            ports: Vec::new(),
            endpoints: endpoints
                .iter()
                .map(|ip| Endpoint {
                    ip: (*ip).to_string(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// What kinds of message, in order.
    fn kinds(msgs: &[SchedulerMessage]) -> Vec<&'static str> {
        msgs.iter()
            .map(|m| match &m.msg {
                Some(scheduler_message::Msg::Files(_)) => "files",
                Some(scheduler_message::Msg::Assignments(_)) => "assignments",
                Some(scheduler_message::Msg::Services(_)) => "services",
                _ => "other",
            })
            .collect()
    }

    /// A session opens with the node's files before its assignments; a node whose
    /// assignments never used any gets no FileSet at all; a new set goes at once, before the
    /// assignments the caller sends next.
    #[tokio::test]
    async fn files_go_before_assignments_on_every_session() {
        use crate::files::Kind;
        use crate::files::delivery::{Delivery, FileRef};
        use berth_proto::v1::{FileContent, FileSet};

        let second = Duration::from_secs(1);
        let cluster = Cluster::new(second, 3 * second);
        let record = |name: &str| NodeRecord {
            name: name.into(),
            ..Default::default()
        };
        let plain = cluster.register(record("plain"), Capacity::default());
        let (tx, _rx) = mpsc::channel(8);
        let opened = cluster.connect("plain", plain, tx).unwrap();
        assert_eq!(kinds(&opened), ["assignments", "services"]);

        let session = cluster.register(record("n1"), Capacity::default());
        let refs: BTreeSet<FileRef> = [FileRef {
            kind: Kind::Secret,
            name: "token".into(),
            version: 1,
        }]
        .into();
        let set = FileSet {
            secrets: vec![FileContent {
                name: "token".into(),
                version: 1,
                data: b"v".to_vec(),
            }],
            ..Default::default()
        };
        cluster.send_files("n1", Delivery::new(refs.clone(), set));
        assert_eq!(cluster.files_of("n1"), refs);
        let (tx, mut rx) = mpsc::channel(8);
        let opened = cluster.connect("n1", session, tx).unwrap();
        assert_eq!(kinds(&opened), ["files", "assignments", "services"]);

        cluster.send_files("n1", Delivery::new(BTreeSet::new(), FileSet::default()));
        cluster.assign("n1", vec![Assignment::default()]);
        let sent = [rx.try_recv().unwrap(), rx.try_recv().unwrap()];
        assert_eq!(kinds(&sent), ["files", "assignments"]);
        assert!(cluster.files_of("n1").is_empty());
    }

    fn services_in(msgs: &[SchedulerMessage]) -> Vec<ServiceSet> {
        msgs.iter()
            .filter_map(|m| match &m.msg {
                Some(scheduler_message::Msg::Services(set)) => Some(set.clone()),
                _ => None,
            })
            .collect()
    }

    /// A session opens with the current service set; a change goes to every connected node
    /// under a higher generation, and only a change does; acknowledgements of Ready nodes
    /// decide `services_acked`.
    #[tokio::test]
    async fn service_sets_go_to_every_session_and_acks_are_tracked() {
        let second = Duration::from_secs(1);
        let cluster = Cluster::new(second, 3 * second);
        let first = cluster.publish_services(vec![web(&["10.88.0.2"])]);
        let record = |name: &str| NodeRecord {
            name: name.into(),
            ..Default::default()
        };
        let session = cluster.register(record("n1"), Capacity::default());
        let (tx, mut rx) = mpsc::channel(8);
        let opened = cluster.connect("n1", session, tx).unwrap();
        let sets = services_in(&opened);
        assert_eq!(sets.len(), 1, "{opened:?}");
        assert_eq!(
            (sets[0].generation, &sets[0].services),
            (first, &vec![web(&["10.88.0.2"])])
        );

        assert_eq!(cluster.publish_services(vec![web(&["10.88.0.2"])]), first);
        assert!(rx.try_recv().is_err(), "no change, nothing sent");
        let second_gen = cluster.publish_services(vec![web(&[])]);
        assert!(second_gen > first);
        let sent = services_in(&[rx.try_recv().expect("the new set")]);
        assert_eq!(sent[0].generation, second_gen);

        assert!(!cluster.services_acked(second_gen), "n1 has not applied it");
        cluster.services_applied("n1", session, second_gen);
        assert!(cluster.services_acked(second_gen));
        // A stale session's acknowledgement counts for nothing.
        let newer = cluster.register(record("n1"), Capacity::default());
        let (tx, _rx) = mpsc::channel(8);
        cluster.connect("n1", newer, tx).unwrap();
        cluster.services_applied("n1", session, second_gen);
        assert!(!cluster.services_acked(second_gen));
        cluster.heartbeat("n1", newer, Capacity::default(), Vec::new(), second_gen);
        assert!(
            cluster.services_acked(second_gen),
            "a heartbeat reports it too"
        );
    }
}
