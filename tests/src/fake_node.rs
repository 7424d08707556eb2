//! Simulated nodes for control-plane tests and benchmarks: a task that speaks the agent's side
//! of NodeService (register with a big capacity, heartbeat, take every assignment set as
//! applied, acknowledge every service set) and follows the leader among several schedulers as
//! the real agent does. It runs nothing: for placement and failover at a scale real nodes cannot reach here, and for the
//! control loop's timeouts under a paused clock (see [`Behaviour`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::node_service_client::NodeServiceClient;
use berth_proto::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Each simulated node's capacity: 64 CPUs, 256 GiB.
pub const NODE_CPU_MILLIS: u64 = 64_000;
pub const NODE_MEMORY: u64 = 256 << 30;
/// The real agent's reconnect backoff (agent/src/session.rs, `--reconnect-max` default 5 s).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// When a fake agent's session opened, and on which scheduler.
pub type Sessions = Arc<Mutex<Vec<(Instant, String)>>>;

/// In a container's env, this makes a fake node report it running but never ready.
pub const NEVER_READY_ENV: &str = "FAKE_NODE_NEVER_READY";

/// What a fake node received or acknowledged, when (tokio's clock) and on which node. Nodes
/// may share one log: its order is then the order across them.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub node: String,
    pub at: tokio::time::Instant,
    pub seen: Seen,
}

/// One entry of a [`Logged`].
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Assignments(AssignmentSet),
    Services(ServiceSet),
    /// It acknowledged applying this ServiceSet generation.
    ServicesApplied(u64),
    /// A FileSet: the config and secret versions (with content) its assignments use.
    Files(FileSet),
}

/// What a fake node reports beyond registering and heartbeating.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Report every assigned container as running and ready (not ready when its env holds
    /// [`NEVER_READY_ENV`]), as an agent whose containers all start would; otherwise report
    /// no containers at all.
    pub runs_assignments: bool,
    /// While set, the session stays open but no heartbeat goes out: a hung agent.
    pub silent: Arc<AtomicBool>,
    /// While set, service sets are taken but never acknowledged (a node whose load balancer
    /// is stuck): the scheduler's drain then ends by its timeout.
    pub withhold_service_acks: Arc<AtomicBool>,
    /// Every assignment set, service set and file set received, and every acknowledgement
    /// sent.
    pub seen: Arc<Mutex<Vec<Logged>>>,
    /// The `--allow-bind` paths it registers with (none by default).
    pub allowed_bind_paths: Vec<String>,
    /// The node labels it registers with (none by default).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A fake node: registers with 64 CPUs / 256 GiB, heartbeats with no containers, drains what
/// the scheduler sends. Follows the leader among `addresses` as the real agent does.
pub async fn fake_agent(name: String, addresses: Vec<String>, sessions: Sessions) {
    fake_agent_with(name, addresses, sessions, Behaviour::default()).await;
}

/// [`fake_agent`] that behaves as `behaviour` says.
pub async fn fake_agent_with(
    name: String,
    addresses: Vec<String>,
    sessions: Sessions,
    behaviour: Behaviour,
) {
    let mut next = 0;
    let mut leader: Option<String> = None;
    let mut delay = BACKOFF_MIN;
    loop {
        let started = tokio::time::Instant::now();
        let addr = leader
            .take()
            .unwrap_or_else(|| addresses[next % addresses.len()].clone());
        match fake_session(&name, &addr, &sessions, &behaviour).await {
            Err(Ended::Redirected(url)) => {
                leader = Some(url);
                delay = BACKOFF_MIN;
                continue;
            }
            Err(Ended::Other) => next += 1,
        }
        if started.elapsed() > Duration::from_secs(10) {
            delay = BACKOFF_MIN;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

enum Ended {
    /// A standby named the leader.
    Redirected(String),
    Other,
}

impl From<tonic::Status> for Ended {
    fn from(status: tonic::Status) -> Self {
        match berth_proto::leader::leader_hint(&status) {
            Some(url) => Ended::Redirected(url),
            None => Ended::Other,
        }
    }
}

fn capacity() -> Capacity {
    let all = Resources {
        cpu_millis: NODE_CPU_MILLIS,
        memory_bytes: NODE_MEMORY,
    };
    Capacity {
        total: Some(all),
        allocatable: Some(all),
        allocated: Some(Resources::default()),
    }
}

fn heartbeat(
    applied_generation: u64,
    applied_service_generation: u64,
    containers: Vec<ContainerStatus>,
) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Heartbeat(Heartbeat {
            capacity: Some(capacity()),
            containers,
            applied_generation,
            applied_service_generation,
        })),
    }
}

/// The status of an assigned container on a node that runs its assignments, with a pod IP
/// from the node's CIDR (`ip`, as a real agent reports it).
fn running(a: &Assignment, ip: String) -> ContainerStatus {
    ContainerStatus {
        container_id: a.container_id.clone(),
        deployment: a.deployment.clone(),
        revision: a.revision,
        state: ContainerState::Running as i32,
        ready: !a.env.contains_key(NEVER_READY_ENV),
        ip,
        ..Default::default()
    }
}

/// Pod IPs for a node's containers: from its CIDR, one per container id for the session.
#[derive(Debug, Default)]
struct PodIps {
    base: Option<std::net::Ipv4Addr>,
    given: std::collections::HashMap<String, String>,
}

impl PodIps {
    fn new(pod_cidr: &str) -> Self {
        // The CIDR's network address (the scheduler hands out /24s on a boundary).
        let base = pod_cidr
            .split('/')
            .next()
            .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok());
        Self {
            base,
            given: Default::default(),
        }
    }

    fn of(&mut self, id: &str) -> String {
        let Some(base) = self.base else {
            return String::new();
        };
        let next = u32::try_from(self.given.len()).unwrap_or(0) % 250 + 2;
        self.given
            .entry(id.to_string())
            .or_insert_with(|| std::net::Ipv4Addr::from(u32::from(base) + next).to_string())
            .clone()
    }
}

fn log(behaviour: &Behaviour, node: &str, seen: Seen) {
    behaviour.seen.lock().unwrap().push(Logged {
        node: node.to_string(),
        at: tokio::time::Instant::now(),
        seen,
    });
}

/// One registration and session; it ends only with an error (the stream or the scheduler gone,
/// or a standby's redirect).
async fn fake_session(
    name: &str,
    addr: &str,
    sessions: &Sessions,
    behaviour: &Behaviour,
) -> Result<std::convert::Infallible, Ended> {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .map_err(|_| Ended::Other)?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|_| Ended::Other)?;
    let mut client = NodeServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let registered = client
        .register(RegisterRequest {
            node_name: name.to_string(),
            labels: behaviour.labels.clone(),
            capacity: Some(capacity()),
            node_address: "127.0.0.1".into(),
            agent_endpoint: String::new(),
            agent_version: "bench-store".into(),
            allowed_bind_paths: behaviour.allowed_bind_paths.clone(),
        })
        .await?
        .into_inner();
    let interval = Duration::from_millis(u64::from(registered.heartbeat_interval_ms.max(50)));
    let (tx, rx) = mpsc::channel::<AgentMessage>(16);
    let hello = AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            node_name: name.to_string(),
            session: registered.session,
        })),
    };
    tx.send(hello).await.map_err(|_| Ended::Other)?;
    tx.send(heartbeat(0, 0, Vec::new()))
        .await
        .map_err(|_| Ended::Other)?;
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
    sessions
        .lock()
        .unwrap()
        .push((Instant::now(), addr.to_string()));
    let mut generation = 0;
    let mut services_applied = 0;
    let mut ips = PodIps::new(&registered.pod_cidr);
    let mut containers = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !behaviour.silent.load(Ordering::Relaxed) {
                    let beat = heartbeat(generation, services_applied, containers.clone());
                    tx.send(beat).await.map_err(|_| Ended::Other)?;
                }
            }
            message = inbound.message() => match message? {
                // Nothing runs here: the set is taken as applied.
                Some(SchedulerMessage { msg: Some(scheduler_message::Msg::Assignments(set)) }) => {
                    generation = set.generation;
                    if behaviour.runs_assignments {
                        containers = set
                            .assignments
                            .iter()
                            .map(|a| running(a, ips.of(&a.container_id)))
                            .collect();
                    }
                    log(behaviour, name, Seen::Assignments(set));
                }
                Some(SchedulerMessage { msg: Some(scheduler_message::Msg::Services(set)) }) => {
                    let applied = set.generation;
                    log(behaviour, name, Seen::Services(set));
                    if !behaviour.withhold_service_acks.load(Ordering::Relaxed) {
                        services_applied = services_applied.max(applied);
                        let ack = AgentMessage {
                            msg: Some(agent_message::Msg::ServicesApplied(ServicesApplied {
                                generation: applied,
                            })),
                        };
                        // Logged before it goes, so a shared log orders it before what the
                        // scheduler does on receiving it.
                        log(behaviour, name, Seen::ServicesApplied(applied));
                        tx.send(ack).await.map_err(|_| Ended::Other)?;
                    }
                }
                // Kept only in the log: nothing runs here to mount them.
                Some(SchedulerMessage { msg: Some(scheduler_message::Msg::Files(set)) }) => {
                    log(behaviour, name, Seen::Files(set));
                }
                Some(_) => {}
                None => return Err(Ended::Other),
            },
        }
    }
}
