//! The control loop: on every change (store watch, heartbeat, event, timer) it steps each
//! deployment's rollout, places pending replicas, replaces those of lost nodes, sends every
//! node the service set and each node its assignment set. It is the only writer of replicas.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::v1::{
    Assignment, ContainerState, ContainerStatus, Deployment, DeploymentSpec, ImageSource,
    Resources, RolloutPhase, image_source,
};
use futures::StreamExt as _;
use tokio::sync::broadcast;

use crate::clock::now_ms;
use crate::cluster::{self, Cluster};
use crate::deployments::{self, Deployments};
use crate::environments::Environments;
use crate::error::SchedError;
use crate::events::Publisher;
use crate::events::tracker::Tracker;
use crate::files::{Files, delivery};
use crate::placement::{self, NodeView, Placement, Request};
use crate::records::{
    self, DEPLOYMENTS, DeploymentRecord, REPLICAS, ReplicaRecord, VOLUMES, VolumeRecord,
    deployment_key, replica_key, volume_key,
};
use crate::rollout::{self, ReplicaView};
use crate::services::{self, Drain};
use crate::spec::mounts::{bind_sources, volume_names};
use crate::store::{Expect, Op, Store, StoreError};

/// The specs of (deployment, revision) pairs.
type Specs = HashMap<(String, u64), DeploymentSpec>;

#[derive(Debug)]
pub(crate) struct Controller {
    pub store: Arc<dyn Store>,
    deployments: Deployments,
    pub cluster: Arc<Cluster>,
    /// How long a NotReady node's replicas wait before they are replaced elsewhere.
    pub reschedule_delay: Duration,
    /// How long a removed replica may wait for every node to acknowledge a service set
    /// without it before it is stopped anyway.
    pub drain_timeout: Duration,
    drain: Mutex<Drain>,
    statuses: Mutex<BTreeMap<String, Deployment>>,
    pending_reasons: Mutex<HashMap<String, String>>,
    /// Revisions' specs, which never change once written.
    specs: Mutex<Specs>,
    pub events: broadcast::Sender<Deployment>,
    ids: AtomicU64,
    /// The content of the configs and secrets nodes get.
    files: Files,
    /// The cluster's event log (nodes, containers, rollouts), fed from each pass.
    publisher: Publisher,
    tracker: Mutex<Tracker>,
    /// Placement latency and rollout durations.
    metrics: crate::metrics::Metrics,
}

impl Controller {
    pub(crate) fn new(
        deployments: Deployments,
        store: Arc<dyn Store>,
        cluster: Arc<Cluster>,
        reschedule_delay: Duration,
        drain_timeout: Duration,
        files: Files,
    ) -> Self {
        Self {
            deployments,
            store,
            cluster,
            reschedule_delay,
            drain_timeout,
            drain: Mutex::new(Drain::default()),
            statuses: Mutex::new(BTreeMap::new()),
            pending_reasons: Mutex::new(HashMap::new()),
            specs: Mutex::new(HashMap::new()),
            events: broadcast::channel(1024).0,
            // The clock only seeds the counter: before 1970 it starts at 0.
            ids: AtomicU64::new(u64::try_from(now_ms()).unwrap_or(0)),
            files,
            publisher: Publisher::default(),
            tracker: Mutex::new(Tracker::default()),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// Publishes the events each pass sees (nodes, containers, rollouts) to `publisher`.
    pub(crate) fn with_events(mut self, publisher: Publisher) -> Self {
        self.publisher = publisher;
        self
    }

    /// The same loop, recording into `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Every deployment as the loop last described it, by qualified name.
    pub(crate) fn statuses(&self) -> Vec<(String, Deployment)> {
        let statuses = self.statuses.lock().unwrap();
        statuses
            .iter()
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect()
    }

    /// Events for what changed since the last pass: nodes' readiness, containers' states.
    fn observe(&self, statuses: &HashMap<String, (String, ContainerStatus)>) {
        let ready: Vec<(String, bool)> = self.cluster.with_nodes(|nodes| {
            nodes
                .values()
                .map(|n| (n.record.name.clone(), self.cluster.is_ready(n)))
                .collect()
        });
        let mut tracker = self.tracker.lock().unwrap();
        tracker.nodes(&self.publisher, ready);
        tracker.containers(&self.publisher, statuses);
    }

    /// Runs until `shutdown` is set.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let wake = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(watch_deployments(self.store.clone(), wake.clone()));
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::warn!("reconcile: {e}");
            }
            tokio::select! {
                () = self.cluster.changed.notified() => {}
                () = wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    pub(crate) fn status(&self, name: &str) -> Option<Deployment> {
        self.statuses.lock().unwrap().get(name).cloned()
    }

    /// The deployment as the loop last described it, or from its record if the loop has not
    /// seen this version of it yet.
    pub(crate) async fn current(&self, name: &str) -> Result<Deployment, SchedError> {
        let (rec, mod_rev) = self.deployments.load(name).await?;
        match self.status(name) {
            Some(d) if d.resource_version == mod_rev => Ok(d),
            _ => Ok(deployments::describe(
                name,
                &rec,
                mod_rev,
                &[],
                &HashMap::new(),
                &HashMap::new(),
            )),
        }
    }

    /// A revision's spec, cached (revisions never change).
    async fn spec_of(
        &self,
        name: &str,
        revision: u64,
    ) -> Result<Option<DeploymentSpec>, SchedError> {
        if let Some(s) = self
            .specs
            .lock()
            .unwrap()
            .get(&(name.to_string(), revision))
        {
            return Ok(Some(s.clone()));
        }
        let Some(spec) = self.deployments.spec_of(name, revision).await? else {
            return Ok(None);
        };
        self.specs
            .lock()
            .unwrap()
            .insert((name.to_string(), revision), spec.clone());
        Ok(Some(spec))
    }

    fn new_id(&self, name: &str, revision: u64) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        // A short mix of the counter: unique per scheduler lifetime and across restarts (the
        // counter starts at the clock).
        let mixed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        format!("{name}-{revision}-{mixed:06x}")
    }

    /// One pass over the whole cluster.
    pub(crate) async fn reconcile(&self) -> Result<(), SchedError> {
        let now = now_ms();
        let (deployment_kvs, _) = self.store.list(DEPLOYMENTS).await?;
        let mut deployments: BTreeMap<String, (DeploymentRecord, u64)> = BTreeMap::new();
        for kv in &deployment_kvs {
            let rec: DeploymentRecord = records::decode(&kv.key, &kv.value)?;
            let name = rec
                .spec
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            deployments.insert(name, (rec, kv.mod_revision));
        }
        let mut replicas = self.replicas().await?;
        let before = replicas.clone();

        // Replicas of deleted deployments, and of nodes lost for longer than the delay, go.
        let lost: Vec<String> = self.cluster.with_nodes(|nodes| {
            nodes
                .values()
                .filter(|n| {
                    !self.cluster.is_ready(n)
                        && n.last_heartbeat.elapsed() > self.cluster.grace + self.reschedule_delay
                })
                .map(|n| n.record.name.clone())
                .collect()
        });
        let mut doomed: Vec<String> = Vec::new();
        let mut on_lost: Vec<String> = Vec::new();
        for r in &replicas {
            if !deployments.contains_key(&r.deployment) {
                doomed.push(r.container_id.clone());
            } else if !r.node.is_empty() && lost.contains(&r.node) {
                tracing::info!(replica = %r.container_id, node = %r.node, "node lost: replacing");
                doomed.push(r.container_id.clone());
                on_lost.push(r.container_id.clone());
            }
        }
        self.delete_replicas(&doomed).await?;
        replicas.retain(|r| !doomed.contains(&r.container_id));

        let statuses = self.container_statuses();
        self.observe(&statuses);
        for (name, (rec, mod_rev)) in &deployments {
            let mine: Vec<&ReplicaRecord> =
                replicas.iter().filter(|r| &r.deployment == name).collect();
            let views: Vec<ReplicaView> = mine
                .iter()
                .map(|r| view(r, statuses.get(&r.container_id)))
                .collect();
            if let Err(e) = self.step(name, rec, *mod_rev, &views, now).await {
                match e {
                    SchedError::Store(StoreError::Conflict { .. })
                    | SchedError::Conflict { .. } => {}
                    e => tracing::warn!(deployment = %name, "{e}"),
                }
            }
        }
        // Steps wrote replicas: read them again for placement and assignments.
        let replicas = self.replicas().await?;
        self.start_draining(&before, &replicas, &on_lost);
        let draining = self.drain.lock().unwrap().replicas();
        let replicas = self.place(replicas, &draining).await?;
        self.send_services(&deployments, &replicas, &statuses);
        let draining = self.drain.lock().unwrap().replicas();
        let assigned: Vec<ReplicaRecord> = replicas.iter().chain(&draining).cloned().collect();
        self.send_assignments(&assigned).await?;
        self.publish(&deployments, &replicas, &statuses).await;
        Ok(())
    }

    /// Every replica record in the store.
    async fn replicas(&self) -> Result<Vec<ReplicaRecord>, SchedError> {
        let (replica_kvs, _) = self.store.list(REPLICAS).await?;
        Ok(replica_kvs
            .iter()
            .filter_map(|kv| records::decode(&kv.key, &kv.value).ok())
            .collect())
    }

    /// Replicas this pass removed (rollout, scale-down, deletion; not those of lost nodes)
    /// that are endpoints in the service set the nodes have drain before their assignments
    /// are withdrawn; the others serve no traffic and stop at once.
    fn start_draining(&self, before: &[ReplicaRecord], after: &[ReplicaRecord], lost: &[String]) {
        let kept: HashSet<&str> = after.iter().map(|r| r.container_id.as_str()).collect();
        let endpoints: HashSet<String> = self
            .cluster
            .services()
            .into_iter()
            .flat_map(|s| s.endpoints.into_iter().map(|e| e.container_id))
            .collect();
        let mut drain = self.drain.lock().unwrap();
        for r in before {
            if endpoints.contains(&r.container_id)
                && !kept.contains(r.container_id.as_str())
                && !lost.contains(&r.container_id)
            {
                drain.start(r.clone());
            }
        }
    }

    /// Sends every node the services (draining replicas are no endpoints: their records are
    /// gone) and ends the drain of replicas every Ready node has acknowledged a set without.
    fn send_services(
        &self,
        deployments: &BTreeMap<String, (DeploymentRecord, u64)>,
        replicas: &[ReplicaRecord],
        statuses: &HashMap<String, (String, ContainerStatus)>,
    ) {
        let ready_nodes = self.cluster.with_nodes(|nodes| {
            nodes
                .values()
                .filter(|n| self.cluster.is_ready(n))
                .map(|n| n.record.name.clone())
                .collect()
        });
        let set = services::compute(deployments, replicas, statuses, &ready_nodes);
        let generation = self.cluster.publish_services(set);
        let mut drain = self.drain.lock().unwrap();
        drain.sent(generation);
        drain.release(self.drain_timeout, |g| self.cluster.services_acked(g));
    }

    fn container_statuses(&self) -> HashMap<String, (String, ContainerStatus)> {
        self.cluster.with_nodes(|nodes| {
            let mut out = HashMap::new();
            for n in nodes.values() {
                for (id, s) in &n.containers {
                    out.insert(id.clone(), (n.record.name.clone(), s.clone()));
                }
            }
            out
        })
    }

    async fn delete_replicas(&self, ids: &[String]) -> Result<(), SchedError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ops = ids
            .iter()
            .map(|id| Op::Delete {
                key: replica_key(id),
                expect: Expect::Any,
            })
            .collect();
        crate::store::txn_chunked(self.store.as_ref(), ops).await?;
        Ok(())
    }

    async fn step(
        &self,
        name: &str,
        rec: &DeploymentRecord,
        mod_rev: u64,
        views: &[ReplicaView],
        now: i64,
    ) -> Result<(), SchedError> {
        let mut rec = rec.clone();
        let mut changed = false;
        let phase = RolloutPhase::try_from(rec.phase).unwrap_or(RolloutPhase::Unspecified);
        // Approval that waited too long is a rejection.
        if phase == RolloutPhase::AwaitingApproval {
            let timeout = rec
                .spec
                .as_ref()
                .and_then(|s| s.rollout.as_ref())
                .map_or(0, |r| r.approval_timeout_s);
            if timeout > 0
                && rec.awaiting_since_ms > 0
                && now - rec.awaiting_since_ms > i64::from(timeout) * 1000
            {
                self.deployments
                    .reject(name, &mut rec, "approval timed out")
                    .await?;
                return self.deployments.save(name, &rec, mod_rev).await;
            }
        }
        let step = rollout::step(&rec, views, now);
        let target_spec = if step.revision == rec.revision {
            rec.spec.clone()
        } else {
            self.spec_of(name, step.revision).await?
        };
        let mut ops = Vec::new();
        for _ in 0..step.create {
            let id = self.new_id(name, step.revision);
            let r = ReplicaRecord {
                container_id: id.clone(),
                deployment: name.to_string(),
                revision: step.revision,
                node: String::new(),
                created_at_ms: now,
            };
            ops.push(Op::Put {
                key: replica_key(&id),
                value: records::encode(&r),
                expect: Expect::Absent,
            });
        }
        for id in &step.delete {
            ops.push(Op::Delete {
                key: replica_key(id),
                expect: Expect::Any,
            });
        }
        if target_spec.is_some() && !ops.is_empty() {
            // Each replica is its own key: a large step goes in several transactions (a
            // crash in between leaves fewer replicas, which the next pass creates).
            crate::store::txn_chunked(self.store.as_ref(), ops).await?;
        }
        // Progress: more ready replicas of the target than last time.
        let ready_before = self.status(name).map_or(0, |d| d.ready_replicas);
        if phase == RolloutPhase::Progressing && step.ready_target > ready_before {
            rec.progress_at_ms = now;
            changed = true;
        }
        if let Some(reason) = step.failed {
            self.fail(name, &mut rec, &reason, now).await?;
            changed = true;
        } else if step.phase == Some(RolloutPhase::Complete) {
            tracing::info!(deployment = %name, revision = rec.revision, "rollout complete");
            rec.phase = RolloutPhase::Complete as i32;
            rec.stable_revision = rec.revision;
            if let Some(spec) = &rec.spec {
                rec.stable_release =
                    crate::releases::record_completed(self.store.as_ref(), spec, rec.revision, now)
                        .await?;
                rec.stable_since_ms = now;
            }
            rec.message = if rec.rolled_back_from != 0 {
                format!("rolled back from revision {}", rec.rolled_back_from)
            } else {
                String::new()
            };
            self.deployments
                .set_outcome(name, rec.revision, RolloutPhase::Complete, "")
                .await?;
            changed = true;
        }
        if changed {
            self.deployments.save(name, &rec, mod_rev).await?;
        }
        Ok(())
    }

    /// A failed rollout: back to the last good revision (as a new revision), or marked failed.
    async fn fail(
        &self,
        name: &str,
        rec: &mut DeploymentRecord,
        reason: &str,
        now: i64,
    ) -> Result<(), SchedError> {
        let failed = rec.revision;
        tracing::warn!(deployment = %name, revision = failed, "rollout failed: {reason}");
        self.deployments
            .set_outcome(name, failed, RolloutPhase::Failed, reason)
            .await?;
        let auto = rec
            .spec
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .and_then(|r| r.auto_rollback)
            .unwrap_or(true);
        let stable = rec.stable_revision;
        if auto
            && stable != 0
            && stable != failed
            && let Some(mut spec) = self.spec_of(name, stable).await?
        {
            // Keep today's scale: a rollback changes what runs, not how many.
            spec.replicas = rec.spec.as_ref().map_or(spec.replicas, |s| s.replicas);
            let revision = rec.last_revision + 1;
            self.deployments
                .put_revision(name, revision, &spec, now)
                .await?;
            rec.spec = Some(spec);
            rec.revision = revision;
            rec.last_revision = revision;
            rec.rolled_back_from = failed;
            self.metrics.rolled_back(name);
            rec.phase = RolloutPhase::Progressing as i32;
            rec.progress_at_ms = now;
            rec.message = format!(
                "revision {failed} failed ({reason}); rolling back to revision {stable}'s spec"
            );
        } else {
            rec.phase = RolloutPhase::Failed as i32;
            rec.message = format!("revision {failed} failed: {reason}");
        }
        Ok(())
    }

    /// Places pending replicas; returns the replicas with their nodes. Replicas being
    /// drained still hold their ports and resources.
    async fn place(
        &self,
        mut replicas: Vec<ReplicaRecord>,
        draining: &[ReplicaRecord],
    ) -> Result<Vec<ReplicaRecord>, SchedError> {
        let held: Vec<ReplicaRecord> = replicas.iter().chain(draining).cloned().collect();
        let specs = self.specs_for(&held).await?;
        let mut nodes = self.node_views(&held, &specs);
        let mut volumes = self.volume_nodes().await?;
        let env_selectors = Environments::new(self.store.clone()).selectors().await?;
        let mut pending: Vec<usize> = (0..replicas.len())
            .filter(|&i| replicas[i].node.is_empty())
            .collect();
        pending.sort_by_key(|&i| (replicas[i].created_at_ms, replicas[i].container_id.clone()));
        let mut reasons = HashMap::new();
        for i in pending {
            let r = &replicas[i];
            let Some(spec) = specs.get(&(r.deployment.clone(), r.revision)) else {
                continue;
            };
            let used = volume_names(spec);
            let volume_node = match pinned_node(&used, &volumes) {
                Ok(node) => node,
                Err(reason) => {
                    reasons.insert(r.container_id.clone(), reason);
                    continue;
                }
            };
            let binds = bind_sources(spec);
            let sel = selector(spec, &env_selectors);
            let started = std::time::Instant::now();
            let mut request = placement_request(&r.deployment, spec, &sel);
            request.volume_node = volume_node.as_deref();
            request.binds = &binds;
            match placement::place(&nodes, &request) {
                Placement::Node(n) => {
                    let node = nodes[n].name.clone();
                    let new: Vec<&str> = used
                        .into_iter()
                        .filter(|v| !volumes.contains_key(*v))
                        .collect();
                    let Some(placed) = self.bind(r, &node, &new).await? else {
                        continue;
                    };
                    for v in new {
                        volumes.insert(v.to_string(), node.clone());
                    }
                    account(&mut nodes[n], spec, &r.deployment);
                    self.metrics.placed(started.elapsed());
                    replicas[i] = placed;
                }
                Placement::Unschedulable { reason } => {
                    reasons.insert(r.container_id.clone(), reason);
                }
            }
        }
        *self.pending_reasons.lock().unwrap() = reasons;
        Ok(replicas)
    }

    /// Each named volume's node, from its `/volumes/` record.
    async fn volume_nodes(&self) -> Result<HashMap<String, String>, SchedError> {
        let (kvs, _) = self.store.list(VOLUMES).await?;
        let mut out = HashMap::new();
        for kv in &kvs {
            let v: VolumeRecord = records::decode(&kv.key, &kv.value)?;
            out.insert(v.name, v.node);
        }
        Ok(out)
    }

    /// The spec of every (deployment, revision) the replicas run.
    async fn specs_for(&self, replicas: &[ReplicaRecord]) -> Result<Specs, SchedError> {
        let mut specs = Specs::new();
        for r in replicas {
            let k = (r.deployment.clone(), r.revision);
            if !specs.contains_key(&k)
                && let Some(s) = self.spec_of(&r.deployment, r.revision).await?
            {
                specs.insert(k, s);
            }
        }
        Ok(specs)
    }

    /// The nodes as placement sees them, with what the placed `replicas` and the containers
    /// being stopped already take.
    fn node_views(&self, replicas: &[ReplicaRecord], specs: &Specs) -> Vec<NodeView> {
        let mut departing: Vec<(String, Assignment)> = Vec::new();
        let mut nodes: Vec<NodeView> = self.cluster.with_nodes(|nodes| {
            for n in nodes.values() {
                departing.extend(
                    n.departing
                        .values()
                        .map(|a| (n.record.name.clone(), a.clone())),
                );
            }
            nodes
                .values()
                .map(|n| NodeView {
                    name: n.record.name.clone(),
                    ready: self.cluster.is_ready(n),
                    labels: n
                        .record
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    allocatable: cluster::allocatable(n),
                    allocated: Resources::default(),
                    host_ports: Default::default(),
                    replicas_by_deployment: Default::default(),
                    allowed_bind_paths: n.record.allowed_bind_paths.clone(),
                })
                .collect()
        });
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        for r in replicas {
            if let (Some(&i), Some(spec)) = (
                index.get(&r.node),
                specs.get(&(r.deployment.clone(), r.revision)),
            ) {
                account(&mut nodes[i], spec, &r.deployment);
            }
        }
        // Containers being stopped still hold their ports and resources.
        for (node, a) in &departing {
            if let Some(&i) = index.get(node) {
                let spec = DeploymentSpec {
                    resources: a.resources,
                    ports: a.ports.clone(),
                    ..Default::default()
                };
                account(&mut nodes[i], &spec, &a.deployment);
            }
        }
        nodes
    }

    /// Writes replica `r` placed on `node`; None when the replica is gone meanwhile. The
    /// records of `new_volumes` (named volumes it is the first to use) go in the same
    /// transaction, created only if absent, so a volume's data has one node for good.
    async fn bind(
        &self,
        r: &ReplicaRecord,
        node: &str,
        new_volumes: &[&str],
    ) -> Result<Option<ReplicaRecord>, SchedError> {
        let mut placed = r.clone();
        placed.node = node.to_string();
        let key = replica_key(&placed.container_id);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let mut ops = vec![Op::Put {
            key,
            value: records::encode(&placed),
            expect: Expect::Revision(kv.mod_revision),
        }];
        let now = now_ms();
        ops.extend(new_volumes.iter().map(|name| Op::Put {
            key: volume_key(name),
            value: records::encode(&VolumeRecord {
                name: (*name).to_string(),
                node: node.to_string(),
                created_at_ms: now,
            }),
            expect: Expect::Absent,
        }));
        self.store.txn(ops).await?;
        for name in new_volumes {
            tracing::info!(volume = %name, node = %node, "volume data placed");
        }
        tracing::info!(replica = %placed.container_id, node = %placed.node, "placed");
        Ok(Some(placed))
    }

    async fn send_assignments(&self, replicas: &[ReplicaRecord]) -> Result<(), SchedError> {
        let mut per_node: BTreeMap<String, Vec<Assignment>> = BTreeMap::new();
        self.cluster.with_nodes(|nodes| {
            for name in nodes.keys() {
                per_node.insert(name.clone(), Vec::new());
            }
        });
        for r in replicas.iter().filter(|r| !r.node.is_empty()) {
            let Some(spec) = self.spec_of(&r.deployment, r.revision).await? else {
                continue;
            };
            per_node
                .entry(r.node.clone())
                .or_default()
                .push(assignment(r, &spec));
        }
        for (node, set) in per_node {
            // A changed file set goes first, so the assignments find what they mount; only
            // then are secrets read and decrypted.
            let refs = delivery::assignment_refs(&set);
            if refs != self.cluster.files_of(&node) {
                let files = self.files.delivery(refs).await;
                tracing::debug!(node = %node, files = ?files.refs, "file set changed");
                self.cluster.send_files(&node, files);
            }
            self.cluster.assign(&node, set);
        }
        Ok(())
    }

    async fn publish(
        &self,
        deployments: &BTreeMap<String, (DeploymentRecord, u64)>,
        replicas: &[ReplicaRecord],
        statuses: &HashMap<String, (String, ContainerStatus)>,
    ) {
        // Re-read the records: steps may have changed them.
        let mut fresh = BTreeMap::new();
        for name in deployments.keys() {
            if let Ok(Some(kv)) = self.store.get(&deployment_key(name)).await
                && let Ok(rec) = records::decode::<DeploymentRecord>(&kv.key, &kv.value)
            {
                fresh.insert(name.clone(), (rec, kv.mod_revision));
            }
        }
        let reasons = self.pending_reasons.lock().unwrap().clone();
        let mut out = self.statuses.lock().unwrap();
        out.retain(|name, _| fresh.contains_key(name));
        for (name, (rec, mod_rev)) in fresh {
            let d = deployments::describe(&name, &rec, mod_rev, replicas, statuses, &reasons);
            if out.get(&name) != Some(&d) {
                self.metrics.deployment_changed(&name, out.get(&name), &d);
                let _ = self.events.send(d.clone());
                out.insert(name, d);
            }
        }
        let mut tracker = self.tracker.lock().unwrap();
        tracker.rollouts(&self.publisher, out.values());
    }
}

/// Wakes the loop on every change under /deployments/ (re-listing when the watch breaks).
async fn watch_deployments(store: Arc<dyn Store>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let from = store.revision().await.unwrap_or(0);
        match store.watch(DEPLOYMENTS, from).await {
            Ok(mut events) => {
                while let Some(event) = events.next().await {
                    if event.is_err() {
                        break;
                    }
                    wake.notify_one();
                }
            }
            Err(e) => tracing::warn!("watching deployments: {e}"),
        }
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node that holds the data of the volumes `used`, if any holds it yet; an error (the
/// Pending reason) when they are on different nodes, where no replica can have them all.
fn pinned_node(used: &[&str], volumes: &HashMap<String, String>) -> Result<Option<String>, String> {
    let held: Vec<(&str, &String)> = used
        .iter()
        .filter_map(|v| volumes.get(*v).map(|node| (*v, node)))
        .collect();
    match held.split_first() {
        None => Ok(None),
        Some(((_, node), rest)) => match rest.iter().find(|(_, other)| other != node) {
            None => Ok(Some((*node).clone())),
            Some((v, other)) => Err(format!(
                "volume data on different nodes: {} on node {node}, {v} on node {other}",
                held[0].0
            )),
        },
    }
}

/// A spec's node selector merged with its environment's (the environment's keys win), in
/// the shape placement takes.
fn selector(
    spec: &DeploymentSpec,
    environments: &HashMap<String, BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut sel = spec.node_selector.clone();
    if let Some(env) = environments.get(&spec.environment) {
        sel.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    sel
}

fn placement_request<'a>(
    deployment: &'a str,
    spec: &'a DeploymentSpec,
    selector: &'a BTreeMap<String, String>,
) -> Request<'a> {
    Request {
        deployment,
        resources: spec.resources.unwrap_or_default(),
        ports: &spec.ports,
        node_selector: selector,
        strategy: berth_proto::v1::Strategy::try_from(spec.strategy).unwrap_or_default(),
        volume_node: None,
        binds: &[],
    }
}

fn account(node: &mut NodeView, spec: &DeploymentSpec, deployment: &str) {
    let r = spec.resources.unwrap_or_default();
    node.allocated.cpu_millis += r.cpu_millis;
    node.allocated.memory_bytes += r.memory_bytes;
    for p in &spec.ports {
        if p.host_port != 0 {
            node.host_ports.insert((p.host_port, p.protocol));
        }
    }
    *node
        .replicas_by_deployment
        .entry(deployment.to_string())
        .or_default() += 1;
}

fn view(r: &ReplicaRecord, status: Option<&(String, ContainerStatus)>) -> ReplicaView {
    let status = status.filter(|(node, _)| *node == r.node).map(|(_, s)| s);
    let ready = status.is_some_and(|s| s.ready && s.state == ContainerState::Running as i32);
    let broken = status.and_then(|s| {
        let failed = s.state == ContainerState::Failed as i32;
        let looping = matches!(s.reason.as_str(), "CrashLoopBackOff" | "ImagePullBackOff");
        let gave_up =
            s.state == ContainerState::Exited as i32 && s.message.starts_with("not restarted");
        (failed || looping || gave_up).then(|| {
            let mut why = format!("replica {} on {}: {}", r.container_id, r.node, s.reason);
            if !s.message.is_empty() {
                why.push_str(": ");
                why.push_str(&s.message);
            }
            if s.exit_code != 0 {
                why.push_str(&format!(" (exit code {})", s.exit_code));
            }
            why
        })
    });
    ReplicaView {
        id: r.container_id.clone(),
        revision: r.revision,
        ready,
        broken,
        created_at_ms: r.created_at_ms,
    }
}

/// The assignment a node gets for a replica.
pub(crate) fn assignment(r: &ReplicaRecord, spec: &DeploymentSpec) -> Assignment {
    let image = spec.image_source.clone().map(|mut s| {
        s.reference = spec.image.clone();
        s
    });
    Assignment {
        container_id: r.container_id.clone(),
        deployment: r.deployment.clone(),
        revision: r.revision,
        image: Some(image.unwrap_or(ImageSource {
            reference: spec.image.clone(),
            fetch: Some(image_source::Fetch::Present(true)),
        })),
        command: spec.command.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        resources: spec.resources,
        pids_limit: 0,
        ports: spec.ports.clone(),
        restart: spec.restart,
        readiness: spec.readiness.clone(),
        liveness: spec.liveness.clone(),
        labels: spec.labels.clone(),
        security: spec.security.clone(),
        volumes: spec.volumes.clone(),
        tmpfs: spec.tmpfs.clone(),
        binds: spec.binds.clone(),
        configs: spec.configs.clone(),
        secrets: spec.secrets.clone(),
        env_from_secret: spec.env_from_secret.clone(),
        environment: spec.environment.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment's node selector is merged into the spec's at placement, its keys
    /// winning; a spec in an environment without a selector keeps its own.
    #[test]
    fn the_environment_selector_is_merged_over_the_spec_s() {
        let spec = DeploymentSpec {
            environment: "production".into(),
            node_selector: [("tier", "any"), ("zone", "a")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            ..Default::default()
        };
        let envs: HashMap<String, BTreeMap<String, String>> = [(
            "production".to_string(),
            [("tier".to_string(), "prod".to_string())].into(),
        )]
        .into();
        let merged = selector(&spec, &envs);
        assert_eq!(merged["tier"], "prod");
        assert_eq!(merged["zone"], "a");
        let staging = DeploymentSpec {
            environment: "staging".into(),
            ..spec.clone()
        };
        assert_eq!(selector(&staging, &envs), spec.node_selector);
    }

    #[test]
    fn volumes_pin_a_replica_to_the_one_node_holding_them() {
        let volumes: HashMap<String, String> = [("data", "n1"), ("logs", "n1"), ("cache", "n2")]
            .into_iter()
            .map(|(v, n)| (v.to_string(), n.to_string()))
            .collect();
        assert_eq!(pinned_node(&[], &volumes), Ok(None));
        assert_eq!(pinned_node(&["new"], &volumes), Ok(None));
        assert_eq!(
            pinned_node(&["new", "data", "logs"], &volumes),
            Ok(Some("n1".into()))
        );
        assert_eq!(
            pinned_node(&["data", "cache"], &volumes),
            Err("volume data on different nodes: data on node n1, cache on node n2".into())
        );
    }
}
