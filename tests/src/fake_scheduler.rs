//! A fake scheduler: the scheduler's side of the berth.v1 node protocol, served by a real tonic
//! server on loopback, so tests can drive a real `berth-agent` (or a hand-written client).
//!
//! Tests are plain `#[test]` functions: the scheduler owns its own tokio runtime and every
//! method blocks. Call them outside any tokio runtime (a `block_on` of the test's own runtime
//! must not be running on the calling thread), since waiting and stopping block the thread.
//!
//! What the fake scheduler does:
//! - `Register` records the request, gives the node its pod CIDR (the one the test chose with
//!   [`FakeScheduler::set_pod_cidr`], else one from the default allocator, kept across
//!   registrations), the heartbeat interval ([`DEFAULT_HEARTBEAT_INTERVAL_MS`] unless set) and
//!   a new session number. A registration ends the node's open session stream (its session
//!   is stale from then on).
//! - `Session` wants a `Hello` first: an unknown node or a session other than the node's last
//!   one is refused with `FailedPrecondition` (and recorded, see
//!   [`FakeScheduler::refused_hellos`]); another first message gets `InvalidArgument`. Then it
//!   sends the node's current `FileSet` (only once the test called [`FakeScheduler::files`]),
//!   `AssignmentSet` (only once the test called [`FakeScheduler::assign`] for it) and `RouteSet` (only once the test called
//!   [`FakeScheduler::routes`]) and `ServiceSet` (only once the test called
//!   [`FakeScheduler::services`]), in that order, and again whenever the test changes them. A
//!   newer session of the same node replaces the older stream, which ends with `Aborted`.
//! - Everything the node sends is kept per node: the latest heartbeat, every event in order,
//!   every `ServicesApplied` generation in order, and anything that breaks the protocol (in [`NodeRecord::protocol_errors`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_proto::v1::node_service_server::{NodeService, NodeServiceServer};
use berth_proto::v1::{
    AgentMessage, Assignment, AssignmentSet, ContainerEvent, ContainerState, ContainerStatus,
    FileContent, FileSet, Heartbeat, Hello, ImageSource, PodRoute, RegisterRequest,
    RegisterResponse, Resources, RestartPolicy, RouteSet, SchedulerMessage, ServiceSet,
    agent_message, image_source, restart_policy, scheduler_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Code, Request, Response, Status, Streaming};

/// The heartbeat interval the fake scheduler hands out unless a test sets another: short, so
/// tests see state changes quickly.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u32 = 200;

/// The default pod CIDR of the n-th node (0, 1, ...) that registers without one set by the test.
pub fn default_pod_cidr(n: u32) -> String {
    format!("10.{}.{}.0/24", 200 + n / 256, n % 256)
}

/// An assignment with defaults tests tweak: deployment = `id`, revision 1, the image taken from
/// the node's store as is (`present`), restart policy never, 100m cpu and 64 MiB of memory.
pub fn assignment(id: &str, image_ref: &str) -> Assignment {
    Assignment {
        container_id: id.to_string(),
        deployment: id.to_string(),
        revision: 1,
        image: Some(ImageSource {
            reference: image_ref.to_string(),
            fetch: Some(image_source::Fetch::Present(true)),
        }),
        resources: Some(Resources {
            cpu_millis: 100,
            memory_bytes: 64 << 20,
        }),
        restart: Some(RestartPolicy {
            kind: restart_policy::Kind::Never as i32,
            max_retries: 0,
        }),
        ..Default::default()
    }
}

/// A route to another node's pods.
pub fn pod_route(node_name: &str, pod_cidr: &str, node_address: &str) -> PodRoute {
    PodRoute {
        node_name: node_name.to_string(),
        pod_cidr: pod_cidr.to_string(),
        node_address: node_address.to_string(),
    }
}

/// The state of a status (`Unspecified` for a value this build does not know).
pub fn state_of(status: &ContainerStatus) -> ContainerState {
    ContainerState::try_from(status.state).unwrap_or(ContainerState::Unspecified)
}

/// Everything the fake scheduler knows of one node.
#[derive(Debug, Clone, Default)]
pub struct NodeRecord {
    /// Every `RegisterRequest` that was answered with a session, in order.
    pub registrations: Vec<RegisterRequest>,
    /// Registrations refused because the test asked for it ([`FakeScheduler::refuse_registration`]).
    pub refused_registrations: usize,
    /// The pod CIDR it gets (or got) on registration.
    pub pod_cidr: Option<String>,
    /// The session a Hello must name now (none before registering or once expired).
    pub session: Option<u64>,
    /// How many Session streams were accepted (a reconnect adds one).
    pub sessions: usize,
    /// Whether a Session stream is open now.
    pub connected: bool,
    /// How many heartbeats came, over all sessions.
    pub heartbeats: usize,
    pub last_heartbeat: Option<Heartbeat>,
    /// Every event, over all sessions, in the order they came.
    pub events: Vec<ContainerEvent>,
    /// Every ServicesApplied generation, over all sessions, in the order they came.
    pub services_applied: Vec<u64>,
    /// The generation of the last `assign` (0: never assigned).
    pub generation: u64,
    /// The assignments of the last `assign`, sent on every new session.
    pub assignments: Option<Vec<Assignment>>,
    /// The routes of the last `routes`, sent on every new session.
    pub routes: Option<Vec<PodRoute>>,
    /// The generation of the last `services` (0: never sent).
    pub service_generation: u64,
    /// The services of the last `services`, sent on every new session.
    pub services: Option<Vec<berth_proto::v1::Service>>,
    /// The generation of the last `files` (0: never sent).
    pub file_generation: u64,
    /// The configs and secrets of the last `files`, sent on every new session first.
    pub files: Option<(Vec<FileContent>, Vec<FileContent>)>,
    /// What the node sent that the protocol does not allow (a second Hello, an empty message).
    pub protocol_errors: Vec<String>,
}

impl NodeRecord {
    /// The status of `container_id` in the latest heartbeat.
    pub fn status(&self, container_id: &str) -> Option<&ContainerStatus> {
        self.last_heartbeat
            .as_ref()?
            .containers
            .iter()
            .find(|c| c.container_id == container_id)
    }

    fn summary(&self) -> String {
        format!(
            "registrations: {}, refused registrations: {}, session: {:?}, sessions: {}, \
             connected: {}, heartbeats: {}, events: {}, generation: {}, protocol errors: {:?}\n\
             last heartbeat: {:#?}",
            self.registrations.len(),
            self.refused_registrations,
            self.session,
            self.sessions,
            self.connected,
            self.heartbeats,
            self.events.len(),
            self.generation,
            self.protocol_errors,
            self.last_heartbeat
        )
    }
}

type Outbox = mpsc::UnboundedSender<Result<SchedulerMessage, Status>>;

#[derive(Default)]
struct Node {
    record: NodeRecord,
    /// The open session stream: its connection number and where to send.
    outbox: Option<(u64, Outbox)>,
    refuse_registration: Option<(Code, String)>,
}

impl Node {
    /// Ends the open session stream, if any, with `status`.
    fn cut(&mut self, status: Status) {
        if let Some((_, outbox)) = self.outbox.take() {
            let _ = outbox.send(Err(status));
        }
        self.record.connected = false;
    }

    fn send(&self, msg: scheduler_message::Msg) {
        if let Some((_, outbox)) = &self.outbox {
            let _ = outbox.send(Ok(SchedulerMessage { msg: Some(msg) }));
        }
    }

    fn assignment_set(&self) -> Option<scheduler_message::Msg> {
        let assignments = self.record.assignments.clone()?;
        Some(scheduler_message::Msg::Assignments(AssignmentSet {
            generation: self.record.generation,
            assignments,
        }))
    }

    fn route_set(&self) -> Option<scheduler_message::Msg> {
        let routes = self.record.routes.clone()?;
        Some(scheduler_message::Msg::Routes(RouteSet { routes }))
    }

    fn file_set(&self) -> Option<scheduler_message::Msg> {
        let (configs, secrets) = self.record.files.clone()?;
        Some(scheduler_message::Msg::Files(FileSet {
            generation: self.record.file_generation,
            configs,
            secrets,
        }))
    }

    fn service_set(&self) -> Option<scheduler_message::Msg> {
        let services = self.record.services.clone()?;
        Some(scheduler_message::Msg::Services(ServiceSet {
            generation: self.record.service_generation,
            services,
        }))
    }
}

type CidrAllocator = Box<dyn Fn(u32) -> String + Send>;

struct State {
    nodes: BTreeMap<String, Node>,
    heartbeat_interval_ms: u32,
    default_cidr: CidrAllocator,
    default_cidrs_given: u32,
    next_session: u64,
    next_connection: u64,
    refused_hellos: Vec<Hello>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every change of `state`.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `change` on the state and wakes every waiter.
    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let out = change(&mut self.lock());
        self.changed.notify_all();
        out
    }
}

#[derive(Clone)]
struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl NodeService for Service {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let request = request.into_inner();
        if request.node_name.is_empty() {
            return Err(Status::invalid_argument("node_name is empty"));
        }
        self.shared.update(|state| {
            let session = state.next_session;
            let interval = state.heartbeat_interval_ms;
            let node = state.nodes.entry(request.node_name.clone()).or_default();
            if let Some((code, message)) = &node.refuse_registration {
                node.record.refused_registrations += 1;
                return Err(Status::new(*code, message.clone()));
            }
            let pod_cidr = match node.record.pod_cidr.clone() {
                Some(cidr) => cidr,
                None => {
                    let cidr = (state.default_cidr)(state.default_cidrs_given);
                    state.default_cidrs_given += 1;
                    cidr
                }
            };
            state.next_session += 1;
            let node = state.nodes.get_mut(&request.node_name).expect("just added");
            node.cut(Status::aborted("the node registered again"));
            node.record.pod_cidr = Some(pod_cidr.clone());
            node.record.session = Some(session);
            node.record.registrations.push(request);
            Ok(Response::new(RegisterResponse {
                pod_cidr,
                heartbeat_interval_ms: interval,
                session,
            }))
        })
    }

    type SessionStream = UnboundedReceiverStream<Result<SchedulerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(AgentMessage {
                msg: Some(agent_message::Msg::Hello(hello)),
            }) => hello,
            Some(other) => {
                return Err(Status::invalid_argument(format!(
                    "the first message of a session must be Hello, not {other:?}"
                )));
            }
            None => return Err(Status::invalid_argument("the stream ended before Hello")),
        };
        let (outbox, messages) = mpsc::unbounded_channel();
        let connection = self.shared.update(|state| {
            let connection = state.next_connection;
            let known = state
                .nodes
                .get(&hello.node_name)
                .filter(|node| !node.record.registrations.is_empty());
            let Some(node) = known else {
                state.refused_hellos.push(hello.clone());
                return Err(Status::failed_precondition(format!(
                    "node {:?} is not registered",
                    hello.node_name
                )));
            };
            if node.record.session != Some(hello.session) {
                let current = node.record.session;
                state.refused_hellos.push(hello.clone());
                return Err(Status::failed_precondition(format!(
                    "session {} of node {:?} is not current (current: {current:?}); register again",
                    hello.session, hello.node_name
                )));
            }
            state.next_connection += 1;
            let node = state.nodes.get_mut(&hello.node_name).expect("checked");
            node.cut(Status::aborted("replaced by a newer session of the node"));
            node.outbox = Some((connection, outbox));
            node.record.sessions += 1;
            node.record.connected = true;
            let sets = [
                node.file_set(),
                node.assignment_set(),
                node.route_set(),
                node.service_set(),
            ];
            for msg in sets.into_iter().flatten() {
                node.send(msg);
            }
            Ok(connection)
        })?;
        tokio::spawn(read_session(
            self.shared.clone(),
            hello.node_name,
            connection,
            inbound,
        ));
        Ok(Response::new(UnboundedReceiverStream::new(messages)))
    }
}

/// Records what the node sends on one session stream until it ends or a newer one replaces it.
async fn read_session(
    shared: Arc<Shared>,
    node_name: String,
    connection: u64,
    mut inbound: Streaming<AgentMessage>,
) {
    loop {
        let next = inbound.message().await;
        let keep_reading = shared.update(|state| {
            let Some(node) = state.nodes.get_mut(&node_name) else {
                return false;
            };
            if node.outbox.as_ref().map(|(c, _)| *c) != Some(connection) {
                // Replaced or cut: what still comes on this stream is not the node's state.
                return false;
            }
            match next {
                Ok(Some(AgentMessage { msg: Some(msg) })) => match msg {
                    agent_message::Msg::Heartbeat(heartbeat) => {
                        node.record.heartbeats += 1;
                        node.record.last_heartbeat = Some(heartbeat);
                    }
                    agent_message::Msg::Event(event) => {
                        if event.status.is_none() {
                            node.record
                                .protocol_errors
                                .push(format!("an event without a status: {event:?}"));
                        }
                        node.record.events.push(event);
                    }
                    agent_message::Msg::ServicesApplied(applied) => {
                        node.record.services_applied.push(applied.generation);
                    }
                    agent_message::Msg::Hello(hello) => node
                        .record
                        .protocol_errors
                        .push(format!("a second Hello in the session: {hello:?}")),
                },
                Ok(Some(AgentMessage { msg: None })) => node
                    .record
                    .protocol_errors
                    .push("an AgentMessage without a message".to_string()),
                Ok(None) | Err(_) => {
                    node.outbox = None;
                    node.record.connected = false;
                    return false;
                }
            }
            true
        });
        if !keep_reading {
            return;
        }
    }
}

/// The scheduler's side of the node protocol on `127.0.0.1:PORT`, with a blocking API for
/// tests. Stops on drop.
pub struct FakeScheduler {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The runtime serving: none while stopped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for FakeScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeScheduler")
            .field("addr", &self.addr)
            .field("running", &self.runtime.is_some())
            .finish_non_exhaustive()
    }
}

impl FakeScheduler {
    /// Serves on a free loopback port.
    pub fn start() -> Self {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind the fake scheduler");
        let addr = listener.local_addr().expect("the fake scheduler's address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                nodes: BTreeMap::new(),
                heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
                default_cidr: Box::new(default_pod_cidr),
                default_cidrs_given: 0,
                next_session: 1,
                next_connection: 1,
                refused_hellos: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        let runtime = serve(&shared, listener);
        Self {
            shared,
            addr,
            runtime: Some(runtime),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, what `berth-agent --scheduler` takes.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn is_running(&self) -> bool {
        self.runtime.is_some()
    }

    /// The heartbeat interval later registrations get.
    pub fn set_heartbeat_interval_ms(&self, ms: u32) {
        self.shared.update(|s| s.heartbeat_interval_ms = ms);
    }

    /// The pod CIDR `node` gets from its next registration on.
    pub fn set_pod_cidr(&self, node: &str, cidr: &str) {
        self.shared.update(|s| {
            s.nodes.entry(node.to_string()).or_default().record.pod_cidr = Some(cidr.to_string())
        });
    }

    /// How pod CIDRs are chosen for nodes the test gave none: `allocate(n)` for the n-th such
    /// node (default: [`default_pod_cidr`]). A node keeps its CIDR when it registers again.
    pub fn set_default_pod_cidrs(&self, allocate: impl Fn(u32) -> String + Send + 'static) {
        self.shared.update(|s| s.default_cidr = Box::new(allocate));
    }

    /// Refuses `node`'s registrations with `code` from now on (`None`: accept them again).
    pub fn refuse_registration(&self, node: &str, code: Option<Code>) {
        self.shared.update(|s| {
            s.nodes
                .entry(node.to_string())
                .or_default()
                .refuse_registration = code.map(|c| (c, "refused by the test".to_string()))
        });
    }

    /// Makes `assignments` the node's whole set with a new generation (returned), sends it to
    /// the node if connected, and remembers it for the node's next sessions.
    pub fn assign(&self, node: &str, assignments: Vec<Assignment>) -> u64 {
        self.shared.update(|s| {
            let node = s.nodes.entry(node.to_string()).or_default();
            node.record.generation += 1;
            node.record.assignments = Some(assignments);
            if let Some(msg) = node.assignment_set() {
                node.send(msg);
            }
            node.record.generation
        })
    }

    /// Makes `configs` and `secrets` the node's file set with a new generation (returned),
    /// sends it if connected and on the next sessions, before the assignments.
    pub fn files(&self, node: &str, configs: Vec<FileContent>, secrets: Vec<FileContent>) -> u64 {
        self.shared.update(|s| {
            let node = s.nodes.entry(node.to_string()).or_default();
            node.record.file_generation += 1;
            node.record.files = Some((configs, secrets));
            if let Some(msg) = node.file_set() {
                node.send(msg);
            }
            node.record.file_generation
        })
    }

    /// Makes `routes` the node's route set, sends it if connected and on the next sessions.
    pub fn routes(&self, node: &str, routes: Vec<PodRoute>) {
        self.shared.update(|s| {
            let node = s.nodes.entry(node.to_string()).or_default();
            node.record.routes = Some(routes);
            if let Some(msg) = node.route_set() {
                node.send(msg);
            }
        });
    }

    /// Makes `services` the node's service set with a new generation (returned), sends it if
    /// connected and on the next sessions.
    pub fn services(&self, node: &str, services: Vec<berth_proto::v1::Service>) -> u64 {
        self.shared.update(|s| {
            let node = s.nodes.entry(node.to_string()).or_default();
            node.record.service_generation += 1;
            node.record.services = Some(services);
            if let Some(msg) = node.service_set() {
                node.send(msg);
            }
            node.record.service_generation
        })
    }

    /// Ends the node's session stream with `Unavailable`; its session stays valid, so it may
    /// open a new stream without registering again.
    pub fn disconnect(&self, node: &str) {
        self.shared.update(|s| {
            if let Some(node) = s.nodes.get_mut(node) {
                node.cut(Status::unavailable("disconnected by the test"));
            }
        });
    }

    /// Forgets the node's session and ends its stream: its next Hello is refused until it
    /// registers again.
    pub fn expire_session(&self, node: &str) {
        self.shared.update(|s| {
            if let Some(node) = s.nodes.get_mut(node) {
                node.record.session = None;
                node.cut(Status::failed_precondition("session expired by the test"));
            }
        });
    }

    /// A copy of everything known of `node` (empty if it never showed up).
    pub fn node(&self, node: &str) -> NodeRecord {
        let state = self.shared.lock();
        state
            .nodes
            .get(node)
            .map(|n| n.record.clone())
            .unwrap_or_default()
    }

    pub fn registrations(&self, node: &str) -> Vec<RegisterRequest> {
        self.read(node, |r| r.registrations.clone())
    }

    pub fn last_heartbeat(&self, node: &str) -> Option<Heartbeat> {
        self.read(node, |r| r.last_heartbeat.clone())
    }

    pub fn events(&self, node: &str) -> Vec<ContainerEvent> {
        self.read(node, |r| r.events.clone())
    }

    /// How many Session streams of `node` were accepted.
    pub fn sessions(&self, node: &str) -> usize {
        self.read(node, |r| r.sessions)
    }

    pub fn connected(&self, node: &str) -> bool {
        self.read(node, |r| r.connected)
    }

    /// The status of `container_id` in `node`'s latest heartbeat.
    pub fn status(&self, node: &str, container_id: &str) -> Option<ContainerStatus> {
        self.read(node, |r| r.status(container_id).cloned())
    }

    /// Every refused Hello, of any node, in order.
    pub fn refused_hellos(&self) -> Vec<Hello> {
        self.shared.lock().refused_hellos.clone()
    }

    fn read<T>(&self, node: &str, f: impl FnOnce(&NodeRecord) -> T) -> T {
        let state = self.shared.lock();
        match state.nodes.get(node) {
            Some(n) => f(&n.record),
            None => f(&NodeRecord::default()),
        }
    }

    /// Waits until `check` gives `Some` for `node`'s record, checking again on every change;
    /// fails the test naming `what` and showing the record after `within`. `check` runs with
    /// the scheduler locked: it must not call the scheduler.
    pub fn wait_node<T>(
        &self,
        node: &str,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&NodeRecord) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        let empty = NodeRecord::default();
        let mut state = self.shared.lock();
        loop {
            let record = state.nodes.get(node).map_or(&empty, |n| &n.record);
            if let Some(value) = check(record) {
                return value;
            }
            let now = Instant::now();
            if now >= deadline {
                let summary = record.summary();
                drop(state);
                panic!("timed out after {within:?} waiting for {what} on node {node}\n{summary}");
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until `check` gives `Some` for `node`'s latest heartbeat; fails the test naming
    /// `what` and showing the last heartbeat after `within`.
    pub fn wait_for<T>(
        &self,
        node: &str,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&Heartbeat) -> Option<T>,
    ) -> T {
        self.wait_node(node, what, within, |r| {
            r.last_heartbeat.as_ref().and_then(&mut check)
        })
    }

    /// Waits for the first event of `node` (from the start) for which `check` gives `Some`.
    pub fn wait_event<T>(
        &self,
        node: &str,
        what: &str,
        within: Duration,
        check: impl FnMut(&ContainerEvent) -> Option<T>,
    ) -> T {
        self.wait_event_since(node, 0, what, within, check)
    }

    /// Like [`Self::wait_event`], looking only at events from index `since` on (take
    /// `events(node).len()` before the action whose events you want).
    pub fn wait_event_since<T>(
        &self,
        node: &str,
        since: usize,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&ContainerEvent) -> Option<T>,
    ) -> T {
        self.wait_node(node, what, within, |r| {
            r.events.iter().skip(since).find_map(&mut check)
        })
    }

    /// Waits until `node` registered `count` times in all; returns the last registration.
    pub fn wait_registrations(
        &self,
        node: &str,
        count: usize,
        within: Duration,
    ) -> RegisterRequest {
        self.wait_node(node, &format!("{count} registration(s)"), within, |r| {
            (r.registrations.len() >= count).then(|| r.registrations.last().cloned())?
        })
    }

    /// Waits until `count` sessions of `node` were accepted in all and one is open.
    pub fn wait_sessions(&self, node: &str, count: usize, within: Duration) {
        self.wait_node(
            node,
            &format!("{count} session(s), connected"),
            within,
            |r| (r.sessions >= count && r.connected).then_some(()),
        )
    }

    /// Waits for a heartbeat saying the node applied `generation` (or a later one).
    pub fn wait_applied(&self, node: &str, generation: u64, within: Duration) -> Heartbeat {
        self.wait_for(
            node,
            &format!("applied generation {generation}"),
            within,
            |h| (h.applied_generation >= generation).then(|| h.clone()),
        )
    }

    /// Waits for a heartbeat showing `container_id` in `state`.
    pub fn wait_state(
        &self,
        node: &str,
        container_id: &str,
        state: ContainerState,
        within: Duration,
    ) -> ContainerStatus {
        self.wait_for(
            node,
            &format!("{container_id} {}", state.as_str_name()),
            within,
            |h| {
                h.containers
                    .iter()
                    .find(|c| c.container_id == container_id && state_of(c) == state)
                    .cloned()
            },
        )
    }

    /// Waits for a heartbeat no longer listing `container_id`.
    pub fn wait_gone(&self, node: &str, container_id: &str, within: Duration) -> Heartbeat {
        self.wait_for(node, &format!("{container_id} gone"), within, |h| {
            (!h.containers.iter().any(|c| c.container_id == container_id)).then(|| h.clone())
        })
    }

    /// Stops serving: the port closes and every session stream breaks. What the scheduler
    /// knows stays. Does nothing when stopped already.
    pub fn stop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            runtime.shutdown_background();
        } else {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
        self.shared.update(|s| {
            for node in s.nodes.values_mut() {
                node.outbox = None;
                node.record.connected = false;
            }
        });
    }

    /// Simulates the scheduler going away and coming back: stops (if running) and serves again
    /// on the same port. Assignments, routes, CIDRs and records stay, generations keep growing;
    /// every session is forgotten, as a restarted scheduler knows no open sessions, so nodes
    /// must register again.
    pub fn restart_on_same_port(&mut self) {
        self.stop();
        self.shared.update(|s| {
            for node in s.nodes.values_mut() {
                node.record.session = None;
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match StdTcpListener::bind(self.addr) {
                Ok(listener) => break listener,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("bind the fake scheduler to {} again: {e}", self.addr),
            }
        };
        self.runtime = Some(serve(&self.shared, listener));
    }
}

impl Drop for FakeScheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves the node service and health on `listener`, on a runtime of its own.
fn serve(shared: &Arc<Shared>, listener: StdTcpListener) -> tokio::runtime::Runtime {
    listener
        .set_nonblocking(true)
        .expect("make the listener non-blocking");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fake-scheduler")
        .enable_all()
        .build()
        .expect("start the fake scheduler's runtime");
    let service = NodeServiceServer::new(Service {
        shared: shared.clone(),
    })
    .max_decoding_message_size(berth_proto::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(berth_proto::MAX_MESSAGE_BYTES);
    runtime.spawn(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("register the listener with tokio");
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_serving::<NodeServiceServer<Service>>().await;
        let served = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
        if let Err(e) = served {
            eprintln!("fake scheduler: serving failed: {e}");
        }
    });
    runtime
}
