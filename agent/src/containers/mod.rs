//! The containers this node runs: each assignment set is applied by starting a task per new
//! container and stopping those no longer assigned; every task publishes its status here.

mod access;
mod prepare;
pub mod record;
mod storage;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_images::Store;
use berth_images::volumes::VolumeStore;
use berth_proto::v1::{
    Assignment, AssignmentSet, Capacity, ContainerState, ContainerStatus, PodRoute, Resources,
    ServiceSet,
};
use tokio::sync::{Notify, OnceCell, broadcast, watch};

use crate::capacity::allocatable;
use crate::config::Config;
use crate::error::AgentError;
use crate::files::Files;
use crate::layout::{ContainerPaths, Layout};
use crate::net::{NetConfig, NodeNetwork, ServicesOutcome};

/// Cloneable handle on the node's containers.
#[derive(Clone, Debug)]
pub struct Containers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub config: Config,
    pub layout: Layout,
    pub store: Store,
    /// Named volumes, node-local (DATA/volumes, shared with `berth run`).
    pub volumes: VolumeStore,
    /// The configs and secrets of the scheduler's latest FileSet.
    pub files: Files,
    net: OnceCell<NodeNetwork>,
    net_ready: Notify,
    /// The node DNS server's answers (served once the network is up; see `crate::dns`).
    dns: crate::dns::Dns,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// The last set applied: re-applied when a stopped container is gone, so that an id
    /// reassigned while it was being stopped is started again.
    desired: Mutex<Option<Vec<Assignment>>>,
    applied_generation: AtomicU64,
    events: broadcast::Sender<ContainerStatus>,
}

#[derive(Debug)]
struct Entry {
    assignment: Arc<Assignment>,
    status: watch::Receiver<ContainerStatus>,
    stop: watch::Sender<bool>,
}

impl Entry {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// How a container's task begins.
#[derive(Debug)]
pub(crate) enum Start {
    /// Newly assigned: prepare everything.
    Fresh,
    /// Found on disk when the agent started.
    Adopt,
    /// Refused before anything was made; the task only reports why.
    Refused(AgentError),
}

impl Containers {
    /// Opens the agent's state and adopts the containers found on disk: running ones are
    /// watched again, those that ended meanwhile report their exit.
    pub async fn open(config: Config) -> Result<Self, AgentError> {
        let layout = Layout::new(&config.data_dir);
        for dir in [
            layout.containers(),
            layout.runtime_root(),
            layout.netns_dir(),
            layout.net_dir(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(AgentError::io(format!("creating {}", dir.display())))?;
        }
        let store =
            Store::open(&config.data_dir).map_err(|e| AgentError::OpenStore(Box::new(e)))?;
        let volumes = VolumeStore::open(&config.data_dir)
            .map_err(AgentError::internal("opening the volume store"))?;
        let (events, _) = broadcast::channel(1024);
        let dns = crate::dns::Dns::new(&config.dns_upstream)?;
        let inner = Arc::new(Inner {
            config,
            layout,
            store,
            volumes,
            files: Files::default(),
            net: OnceCell::new(),
            net_ready: Notify::new(),
            dns,
            entries: Mutex::new(BTreeMap::new()),
            desired: Mutex::new(None),
            applied_generation: AtomicU64::new(0),
            events,
        });
        let this = Self { inner };
        // A pod CIDR from an earlier registration: the network comes up without the scheduler.
        if let Ok(cidr) = std::fs::read_to_string(this.pod_cidr_file()) {
            this.set_pod_cidr(cidr.trim()).await?;
        }
        this.adopt()?;
        Ok(this)
    }

    fn pod_cidr_file(&self) -> std::path::PathBuf {
        self.inner.layout.net_dir().join("pod_cidr")
    }

    /// Brings the node network up for `cidr` (once; a later different one is refused).
    pub async fn set_pod_cidr(&self, cidr: &str) -> Result<(), AgentError> {
        let parsed: ipnet::Ipv4Net = cidr.parse().map_err(|e| AgentError::InvalidArgument {
            field: "pod_cidr",
            reason: format!("{cidr:?}: {e}"),
        })?;
        if let Some(net) = self.inner.net.get() {
            if net.pod_cidr() != parsed {
                return Err(AgentError::InvalidArgument {
                    field: "pod_cidr",
                    reason: format!(
                        "the scheduler now gives {parsed} but this node's containers use {}",
                        net.pod_cidr()
                    ),
                });
            }
            return Ok(());
        }
        let config = &self.inner.config;
        let net = NodeNetwork::setup(NetConfig {
            node_name: config.node_name.clone(),
            pod_cidr: parsed,
            host_netns: config.net_namespace.clone(),
            state_dir: self.inner.layout.net_dir(),
            netns_dir: self.inner.layout.netns_dir(),
        })
        .await?;
        let _ = self.inner.net.set(net);
        record::write_atomic(&self.pod_cidr_file(), parsed.to_string().as_bytes())?;
        self.inner.net_ready.notify_waiters();
        self.sweep_network().await;
        Ok(())
    }

    /// The node DNS server's answers: `update` them from each ServiceSet.
    pub fn dns(&self) -> &crate::dns::Dns {
        &self.inner.dns
    }

    /// The node network, if the pod CIDR is known.
    pub fn network(&self) -> Option<&NodeNetwork> {
        self.inner.net.get()
    }

    pub async fn set_routes(&self, routes: &[PodRoute]) -> Result<(), AgentError> {
        match self.inner.net.get() {
            Some(net) => Ok(net.set_routes(routes).await?),
            None => Err(AgentError::NetworkNotReady),
        }
    }

    /// Answers the node DNS from `set`, then programs the node's service load balancer from it
    /// (see [`NodeNetwork::apply_services`]); fails while the node network is not up. DNS goes
    /// first because it is the cheap check: a set it refuses leaves the nft table untouched, so a
    /// refused set is refused whole, and a retry after an nft failure answers the same again.
    pub async fn apply_services(&self, set: &ServiceSet) -> Result<ServicesOutcome, AgentError> {
        let net = self.inner.net.get().ok_or(AgentError::NetworkNotReady)?;
        self.dns().update(set)?;
        Ok(net.apply_services(set).await?)
    }

    /// The ServiceSet generation applied this session (0: none, or no network yet).
    pub fn applied_service_generation(&self) -> u64 {
        self.inner
            .net
            .get()
            .map_or(0, NodeNetwork::applied_service_generation)
    }

    /// Removes network leftovers (netns, veth, lease, ports) of containers with no directory:
    /// what a crash between teardown steps can leave.
    async fn sweep_network(&self) {
        let Some(net) = self.inner.net.get() else {
            return;
        };
        let known: BTreeSet<String> = self.inner.entries.lock().unwrap().keys().cloned().collect();
        match net.attached() {
            Ok(ids) => {
                for id in ids.into_iter().filter(|id| !known.contains(id)) {
                    if !self.inner.layout.container(&id).dir.exists()
                        && let Err(e) = net.detach(&id).await
                    {
                        tracing::warn!(container = %id, "removing a leftover network: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!("listing attached containers: {e}"),
        }
    }

    fn adopt(&self) -> Result<(), AgentError> {
        let dir = self.inner.layout.containers();
        let entries = std::fs::read_dir(&dir)
            .map_err(AgentError::io(format!("reading {}", dir.display())))?;
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if valid_id(&id).is_err() {
                continue;
            }
            let paths = self.inner.layout.container(&id);
            match record::load_assignment(&paths) {
                Ok(a) => {
                    tracing::info!(container = %id, "adopting");
                    self.spawn(Arc::new(a), Start::Adopt);
                }
                Err(err) => {
                    // Never got as far as saving its assignment: nothing ran. Clean it.
                    tracing::warn!(container = %id, "removing an incomplete container: {err}");
                    let inner = self.inner.clone();
                    tokio::spawn(async move { worker::remove_leftovers(&inner, &paths).await });
                }
            }
        }
        Ok(())
    }

    fn spawn(&self, assignment: Arc<Assignment>, start: Start) {
        let id = assignment.container_id.clone();
        let (status_tx, status_rx) = watch::channel(ContainerStatus {
            container_id: id.clone(),
            deployment: assignment.deployment.clone(),
            revision: assignment.revision,
            state: ContainerState::Pending as i32,
            image: assignment
                .image
                .as_ref()
                .map(|i| i.reference.clone())
                .unwrap_or_default(),
            ..Default::default()
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        self.inner.entries.lock().unwrap().insert(
            id,
            Entry {
                assignment: assignment.clone(),
                status: status_rx,
                stop: stop_tx,
            },
        );
        let this = self.clone();
        tokio::spawn(async move {
            worker::drive(this, assignment, status_tx, stop_rx, start).await;
        });
    }

    /// Applies an assignment set: the node runs exactly these containers afterwards.
    /// Older generations than the applied one are ignored (returns false).
    pub fn apply(&self, set: AssignmentSet) -> bool {
        let applied = self.inner.applied_generation.load(Ordering::SeqCst);
        if set.generation != 0 && set.generation < applied {
            tracing::debug!(
                generation = set.generation,
                applied,
                "ignoring an older assignment set"
            );
            return false;
        }
        self.inner
            .applied_generation
            .store(set.generation, Ordering::SeqCst);
        *self.inner.desired.lock().unwrap() = Some(set.assignments.clone());
        self.reconcile();
        true
    }

    /// Takes the scheduler's FileSet (the whole set the node's assignments use); containers
    /// waiting for one of its versions start. Returns false for an older set than the one held.
    pub fn set_files(&self, set: berth_proto::v1::FileSet) -> bool {
        self.inner.files.replace(set)
    }

    /// A new session starts generations afresh.
    pub fn reset_generation(&self) {
        self.inner.applied_generation.store(0, Ordering::SeqCst);
        self.inner.files.reset_generation();
        if let Some(net) = self.inner.net.get() {
            net.reset_service_generation();
        }
        self.dns().reset_generation();
    }

    pub fn applied_generation(&self) -> u64 {
        self.inner.applied_generation.load(Ordering::SeqCst)
    }

    fn reconcile(&self) {
        let Some(desired) = self.inner.desired.lock().unwrap().clone() else {
            return;
        };
        let wanted: BTreeMap<&str, &Assignment> = desired
            .iter()
            .map(|a| (a.container_id.as_str(), a))
            .collect();
        let mut to_start = Vec::new();
        {
            let entries = self.inner.entries.lock().unwrap();
            for (id, entry) in entries.iter() {
                let keep = wanted
                    .get(id.as_str())
                    .is_some_and(|a| **a == *entry.assignment);
                if !keep && !entry.stopping() {
                    tracing::info!(container = %id, "no longer assigned: stopping");
                    let _ = entry.stop.send(true);
                }
            }
            let mut committed = allocated_by(&entries);
            for (id, a) in &wanted {
                if entries.contains_key(*id) {
                    continue;
                }
                let start = match self.admit(a, &committed) {
                    Ok(()) => {
                        let r = a.resources.unwrap_or_default();
                        committed.cpu_millis += r.cpu_millis;
                        committed.memory_bytes += r.memory_bytes;
                        Start::Fresh
                    }
                    Err(e) => Start::Refused(e),
                };
                to_start.push((Arc::new((*a).clone()), start));
            }
        }
        for (a, start) in to_start {
            self.spawn(a, start);
        }
    }

    /// Refuses an assignment that can never run here: a bad id, more than the node has.
    fn admit(&self, a: &Assignment, committed: &Resources) -> Result<(), AgentError> {
        valid_id(&a.container_id)?;
        let want = a.resources.unwrap_or_default();
        let alloc = self.allocatable();
        if committed.cpu_millis + want.cpu_millis > alloc.cpu_millis
            || committed.memory_bytes + want.memory_bytes > alloc.memory_bytes
        {
            return Err(AgentError::InvalidArgument {
                field: "resources",
                reason: format!(
                    "asks for {}m cpu and {} bytes of memory; the node has {}m and {} bytes \
                     allocatable, {}m and {} bytes already allocated",
                    want.cpu_millis,
                    want.memory_bytes,
                    alloc.cpu_millis,
                    alloc.memory_bytes,
                    committed.cpu_millis,
                    committed.memory_bytes
                ),
            });
        }
        Ok(())
    }

    pub fn allocatable(&self) -> Resources {
        allocatable(&self.inner.config.total, &self.inner.config.reserved)
    }

    pub fn capacity(&self) -> Capacity {
        Capacity {
            total: Some(self.inner.config.total),
            allocatable: Some(self.allocatable()),
            allocated: Some(allocated_by(&self.inner.entries.lock().unwrap())),
        }
    }

    /// Every container's assignment with its current status (what metrics label and read).
    pub(crate) fn assigned_statuses(&self) -> Vec<(Arc<Assignment>, ContainerStatus)> {
        self.inner
            .entries
            .lock()
            .unwrap()
            .values()
            .map(|e| (e.assignment.clone(), e.status.borrow().clone()))
            .collect()
    }

    /// Every container's current status, by id.
    pub fn statuses(&self) -> Vec<ContainerStatus> {
        self.inner
            .entries
            .lock()
            .unwrap()
            .values()
            .map(|e| e.status.borrow().clone())
            .collect()
    }

    pub fn status(&self, id: &str) -> Option<ContainerStatus> {
        self.inner
            .entries
            .lock()
            .unwrap()
            .get(id)
            .map(|e| e.status.borrow().clone())
    }

    /// A receiver of the container's status changes (None when unknown).
    pub fn watch(&self, id: &str) -> Option<watch::Receiver<ContainerStatus>> {
        self.inner
            .entries
            .lock()
            .unwrap()
            .get(id)
            .map(|e| e.status.clone())
    }

    /// Every status change, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerStatus> {
        self.inner.events.subscribe()
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn paths(&self, id: &str) -> Result<ContainerPaths, AgentError> {
        valid_id(id)?;
        Ok(self.inner.layout.container(id))
    }

    /// Stops every container's task without touching the containers (agent shutdown: they
    /// keep running and are adopted by the next agent).
    pub fn detach_all(&self) {
        self.inner.entries.lock().unwrap().clear();
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Waits until the node network exists.
    pub(crate) async fn network_ready(&self) -> &NodeNetwork {
        loop {
            let notified = self.inner.net_ready.notified();
            if let Some(net) = self.inner.net.get() {
                return net;
            }
            notified.await;
        }
    }

    pub(crate) fn publish(&self, status: ContainerStatus) {
        let _ = self.inner.events.send(status);
    }

    /// Called by a task once its container is gone.
    pub(crate) fn forget(&self, id: &str) {
        self.inner.entries.lock().unwrap().remove(id);
        self.reconcile();
    }
}

/// What the node's live assignments ask for (refused ones and those being stopped excluded).
fn allocated_by(entries: &BTreeMap<String, Entry>) -> Resources {
    let mut sum = Resources::default();
    for e in entries.values() {
        let failed = e.status.borrow().state == ContainerState::Failed as i32;
        if e.stopping() || failed {
            continue;
        }
        let r = e.assignment.resources.unwrap_or_default();
        sum.cpu_millis += r.cpu_millis;
        sum.memory_bytes += r.memory_bytes;
    }
    sum
}

/// Container ids become directory names and cgroup paths: letters, digits, '-', '_', '.'.
pub fn valid_id(id: &str) -> Result<(), AgentError> {
    if crate::layout::is_plain_id(id) {
        Ok(())
    } else {
        Err(AgentError::InvalidArgument {
            field: "container_id",
            reason: format!(
                "{id:?} must be 1 to 128 letters, digits, '-', '_' or '.', starting with a letter or digit"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::valid_id;

    #[test]
    fn ids_that_could_escape_a_directory_are_refused() {
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            &"x".repeat(129),
            "a b",
        ] {
            assert!(valid_id(bad).is_err(), "{bad:?}");
        }
        for good in ["web-1", "api.v2_3", "0abc"] {
            assert!(valid_id(good).is_ok(), "{good:?}");
        }
    }
}
