//! The fake scheduler on its own, driven by a hand-written node: registration, the session's
//! Hello, heartbeats and events up, assignment and route sets down, refused Hellos, and a
//! restart on the same port. Needs no root and no agent.

use std::time::Duration;

use berth_proto::v1::node_service_client::NodeServiceClient;
use berth_proto::v1::{
    AgentMessage, AssignmentSet, Capacity, ContainerEvent, ContainerState, ContainerStatus,
    Heartbeat, Hello, RegisterRequest, RegisterResponse, Resources, RouteSet, SchedulerMessage,
    agent_message, scheduler_message,
};
use berth_tests::fake_scheduler::{
    DEFAULT_HEARTBEAT_INTERVAL_MS, FakeScheduler, assignment, pod_route, state_of,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

const WITHIN: Duration = Duration::from_secs(10);

/// The client side: its own runtime, with a worker thread so the connection keeps going while
/// the test blocks on the scheduler.
struct Node {
    runtime: tokio::runtime::Runtime,
    client: NodeServiceClient<Channel>,
    name: String,
}

/// One open session: what the node sends up and what comes down.
struct Session {
    up: mpsc::UnboundedSender<AgentMessage>,
    down: Streaming<SchedulerMessage>,
}

impl Node {
    fn connect(scheduler: &FakeScheduler, name: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("client runtime");
        let client = runtime
            .block_on(NodeServiceClient::connect(scheduler.endpoint()))
            .expect("connect to the fake scheduler");
        Self {
            runtime,
            client,
            name: name.to_string(),
        }
    }

    fn register(&mut self) -> RegisterResponse {
        let request = RegisterRequest {
            node_name: self.name.clone(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            capacity: Some(capacity()),
            node_address: "192.0.2.10".to_string(),
            agent_endpoint: "127.0.0.1:1".to_string(),
            allowed_bind_paths: Vec::new(),
            agent_version: "test".to_string(),
        };
        self.runtime
            .block_on(self.client.register(request))
            .expect("register")
            .into_inner()
    }

    /// Opens a session whose first message is `Hello { name, session }`.
    fn session(&mut self, name: &str, session: u64) -> Result<Session, Status> {
        let (up, messages) = mpsc::unbounded_channel();
        up.send(msg(agent_message::Msg::Hello(Hello {
            node_name: name.to_string(),
            session,
        })))
        .expect("queue the Hello");
        let down = self
            .runtime
            .block_on(self.client.session(UnboundedReceiverStream::new(messages)))?
            .into_inner();
        Ok(Session { up, down })
    }

    /// The next message down, within a deadline.
    fn next(&self, session: &mut Session) -> Option<Result<SchedulerMessage, Status>> {
        self.runtime.block_on(async {
            tokio::time::timeout(WITHIN, session.down.message())
                .await
                .expect("a message from the scheduler in time")
                .transpose()
        })
    }

    fn next_assignments(&self, session: &mut Session) -> AssignmentSet {
        match self.next(session) {
            Some(Ok(SchedulerMessage {
                msg: Some(scheduler_message::Msg::Assignments(set)),
            })) => set,
            other => panic!("wanted an AssignmentSet, got {other:?}"),
        }
    }

    fn next_routes(&self, session: &mut Session) -> RouteSet {
        match self.next(session) {
            Some(Ok(SchedulerMessage {
                msg: Some(scheduler_message::Msg::Routes(set)),
            })) => set,
            other => panic!("wanted a RouteSet, got {other:?}"),
        }
    }
}

fn msg(msg: agent_message::Msg) -> AgentMessage {
    AgentMessage { msg: Some(msg) }
}

fn capacity() -> Capacity {
    let total = Resources {
        cpu_millis: 2000,
        memory_bytes: 2 << 30,
    };
    Capacity {
        total: Some(total),
        allocatable: Some(total),
        allocated: Some(Resources::default()),
    }
}

fn running(id: &str, pid: u32) -> ContainerStatus {
    ContainerStatus {
        container_id: id.to_string(),
        deployment: id.to_string(),
        revision: 1,
        state: ContainerState::Running as i32,
        pid,
        ..Default::default()
    }
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario whose steps build on each other, read top to bottom"
)]
fn register_session_heartbeat_event_and_assignments() {
    let scheduler = FakeScheduler::start();
    scheduler.set_pod_cidr("node-a", "10.77.1.0/24");
    let first = scheduler.assign("node-a", vec![assignment("c1", "busybox:latest")]);
    assert_eq!(first, 1);

    let mut node = Node::connect(&scheduler, "node-a");
    let registered = node.register();
    assert_eq!(registered.pod_cidr, "10.77.1.0/24");
    assert_eq!(
        registered.heartbeat_interval_ms,
        DEFAULT_HEARTBEAT_INTERVAL_MS
    );
    assert_ne!(registered.session, 0);
    let registrations = scheduler.registrations("node-a");
    assert_eq!(registrations.len(), 1);
    assert_eq!(registrations[0].node_address, "192.0.2.10");
    assert_eq!(registrations[0].labels["zone"], "a");
    assert_eq!(registrations[0].capacity, Some(capacity()));

    // Another node without a chosen CIDR gets one from the default allocator.
    let mut other = Node::connect(&scheduler, "node-b");
    assert_eq!(other.register().pod_cidr, "10.200.0.0/24");

    // The assignments set before the session come right after the Hello.
    let mut session = node
        .session("node-a", registered.session)
        .expect("the session opens");
    let set = node.next_assignments(&mut session);
    assert_eq!(set.generation, first);
    assert_eq!(set.assignments, vec![assignment("c1", "busybox:latest")]);
    assert_eq!(scheduler.sessions("node-a"), 1);
    assert!(scheduler.connected("node-a"));

    // Heartbeat and event up.
    session
        .up
        .send(msg(agent_message::Msg::Heartbeat(Heartbeat {
            capacity: Some(capacity()),
            containers: vec![running("c1", 42)],
            applied_generation: first,
            applied_service_generation: 0,
        })))
        .expect("send a heartbeat");
    session
        .up
        .send(msg(agent_message::Msg::Event(ContainerEvent {
            status: Some(running("c1", 42)),
            at_ms: 1234,
        })))
        .expect("send an event");
    let heartbeat = scheduler.wait_applied("node-a", first, WITHIN);
    assert_eq!(heartbeat.capacity, Some(capacity()));
    let status = scheduler.wait_state("node-a", "c1", ContainerState::Running, WITHIN);
    assert_eq!(status.pid, 42);
    let at = scheduler.wait_event("node-a", "c1 running event", WITHIN, |e| {
        let status = e.status.as_ref()?;
        (status.container_id == "c1" && state_of(status) == ContainerState::Running)
            .then_some(e.at_ms)
    });
    assert_eq!(at, 1234);
    assert_eq!(scheduler.events("node-a").len(), 1);
    assert_eq!(scheduler.status("node-a", "c1").map(|s| s.pid), Some(42));
    assert_eq!(scheduler.status("node-a", "c2"), None);
    assert!(scheduler.last_heartbeat("node-b").is_none());

    // A new assignment set and routes come down the open stream, the generation growing.
    let mut c2 = assignment("c2", "busybox:latest");
    c2.args = vec!["sleep".to_string(), "60".to_string()];
    let second = scheduler.assign(
        "node-a",
        vec![assignment("c1", "busybox:latest"), c2.clone()],
    );
    assert!(second > first);
    let set = node.next_assignments(&mut session);
    assert_eq!(set.generation, second);
    assert_eq!(set.assignments[1], c2);
    let route = pod_route("node-b", "10.200.0.0/24", "192.0.2.11");
    scheduler.routes("node-a", vec![route.clone()]);
    assert_eq!(node.next_routes(&mut session).routes, vec![route.clone()]);

    // Nothing the node sent broke the protocol.
    assert!(scheduler.node("node-a").protocol_errors.is_empty());

    // A Hello with a wrong session, or from a node never registered, is refused.
    let refused = node
        .session("node-a", registered.session + 1000)
        .err()
        .expect("a wrong session is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let refused = node
        .session("node-z", registered.session)
        .err()
        .expect("an unknown node is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(scheduler.refused_hellos().len(), 2);
    assert_eq!(scheduler.sessions("node-a"), 1);

    // Registering again makes a new session: the old stream ends, the old session is stale,
    // and the new stream starts with the current sets.
    let again = node.register();
    assert_ne!(again.session, registered.session);
    assert_eq!(again.pod_cidr, "10.77.1.0/24");
    match node.next(&mut session) {
        Some(Err(status)) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        other => panic!("the old stream should end with Aborted, got {other:?}"),
    }
    let stale = node
        .session("node-a", registered.session)
        .err()
        .expect("the old session is refused");
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    let mut session = node
        .session("node-a", again.session)
        .expect("the new session opens");
    assert_eq!(node.next_assignments(&mut session).generation, second);
    assert_eq!(node.next_routes(&mut session).routes, vec![route]);
    scheduler.wait_sessions("node-a", 2, WITHIN);
    assert_eq!(scheduler.registrations("node-a").len(), 2);
}

#[test]
fn first_message_must_be_hello() {
    let scheduler = FakeScheduler::start();
    let mut node = Node::connect(&scheduler, "node-a");
    node.register();
    let (up, messages) = mpsc::unbounded_channel();
    up.send(msg(agent_message::Msg::Heartbeat(Heartbeat::default())))
        .expect("queue a heartbeat");
    let refused = node
        .runtime
        .block_on(node.client.session(UnboundedReceiverStream::new(messages)))
        .expect_err("a session without Hello is refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(scheduler.sessions("node-a"), 0);
}

#[test]
fn restart_on_same_port_breaks_the_stream_and_forgets_sessions() {
    let mut scheduler = FakeScheduler::start();
    let addr = scheduler.addr();
    scheduler.set_heartbeat_interval_ms(50);
    let mut node = Node::connect(&scheduler, "node-a");
    let registered = node.register();
    assert_eq!(registered.heartbeat_interval_ms, 50);
    let mut session = node
        .session("node-a", registered.session)
        .expect("the session opens");
    scheduler.wait_sessions("node-a", 1, WITHIN);
    let generation = scheduler.assign("node-a", vec![assignment("c1", "busybox:latest")]);
    assert_eq!(node.next_assignments(&mut session).generation, generation);

    scheduler.restart_on_same_port();
    assert_eq!(scheduler.addr(), addr);
    assert!(scheduler.is_running());
    assert!(!scheduler.connected("node-a"));
    match node.next(&mut session) {
        Some(Err(_)) | None => {}
        Some(Ok(other)) => panic!("the stream should break, got {other:?}"),
    }

    // The restarted scheduler refuses the old session, takes a new registration and sends
    // what it remembered.
    let stale = node
        .session("node-a", registered.session)
        .err()
        .expect("the old session is refused after the restart");
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    let again = node.register();
    let mut session = node
        .session("node-a", again.session)
        .expect("a new session opens");
    assert_eq!(node.next_assignments(&mut session).generation, generation);
    scheduler.wait_sessions("node-a", 2, WITHIN);
    assert_eq!(scheduler.registrations("node-a").len(), 2);

    // A disconnect ends the stream but keeps the session valid.
    scheduler.disconnect("node-a");
    match node.next(&mut session) {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("the stream should end with Unavailable, got {other:?}"),
    }
    let mut session = node
        .session("node-a", again.session)
        .expect("the session is still valid");
    assert_eq!(node.next_assignments(&mut session).generation, generation);
    scheduler.wait_sessions("node-a", 3, WITHIN);

    scheduler.stop();
    assert!(!scheduler.is_running());
    assert!(!scheduler.connected("node-a"));
}
