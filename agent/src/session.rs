//! The agent's side of the node protocol: register, then keep one session open to the
//! scheduler (heartbeats and events up, assignment sets and routes down), reconnecting with
//! backoff when it drops. Containers keep running whatever happens here.

use std::time::Duration;

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::node_service_client::NodeServiceClient;
use berth_proto::v1::{
    AgentMessage, ContainerEvent, Heartbeat, Hello, RegisterRequest, RegisterResponse,
    SchedulerMessage, ServiceSet, ServicesApplied, agent_message, scheduler_message,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::containers::Containers;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("connecting to the scheduler at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the scheduler refused {call}: {status}")]
    Refused {
        call: &'static str,
        status: tonic::Status,
    },
    #[error("the scheduler closed the session")]
    Closed,
    #[error(transparent)]
    BadAddress(#[from] crate::dial::BadAddress),
}

/// Keeps a session with the scheduler until `shutdown` resolves.
pub(crate) async fn run(
    containers: Containers,
    agent_endpoint: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let max = containers.config().reconnect_max;
    let addresses = scheduler_addresses(&containers.config().scheduler);
    let mut next = 0;
    // A standby's answer: where the leader is. Tried next, at once.
    let mut leader: Option<String> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        let started = tokio::time::Instant::now();
        let addr = leader
            .take()
            .unwrap_or_else(|| addresses[next % addresses.len()].clone());
        tokio::select! {
            result = session(&containers, &agent_endpoint, &addr) => {
                match result {
                    Ok(()) => {}
                    Err(e) => {
                        // A standby named the leader: go there at once.
                        if let SessionError::Refused { status, .. } = &e
                            && let Some(url) = berth_proto::leader::leader_hint(status)
                        {
                            tracing::info!(standby = %addr, leader = %url, "redirected to the leader");
                            leader = Some(url);
                            delay = Duration::from_millis(100);
                            continue;
                        }
                        // This scheduler is gone or refuses: the next one may lead.
                        next += 1;
                        tracing::warn!("scheduler session with {addr}: {e}; reconnecting in {delay:?}");
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
        // A session that lived a while was healthy: start the backoff afresh.
        if started.elapsed() > Duration::from_secs(10) {
            delay = Duration::from_millis(100);
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(max);
    }
}

async fn session(
    containers: &Containers,
    agent_endpoint: &str,
    addr: &str,
) -> Result<(), SessionError> {
    let config = containers.config();
    let (mut client, registered) = register(containers, agent_endpoint, addr).await?;
    containers.reset_generation();
    let interval = Duration::from_millis(u64::from(registered.heartbeat_interval_ms.max(50)));
    let (tx, rx) = mpsc::channel::<AgentMessage>(256);
    let hello = AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            node_name: config.node_name.clone(),
            session: registered.session,
        })),
    };
    tx.send(hello).await.map_err(|_| SessionError::Closed)?;
    // Subscribed before the first heartbeat so no transition falls in between.
    let mut events = containers.subscribe();
    tx.send(heartbeat(containers))
        .await
        .map_err(|_| SessionError::Closed)?;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|status| SessionError::Refused {
            call: "Session",
            status,
        })?
        .into_inner();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Routes that could not be installed yet (e.g. the link to their gateway is not up):
    // tried again on every heartbeat until they are.
    let mut unrouted: Option<Vec<berth_proto::v1::PodRoute>> = None;
    // ServiceSets are programmed by a task of their own, so that a long nft transaction (a
    // whole table of thousands of services) never holds up heartbeats; it always takes the
    // latest set, skipping those superseded meanwhile.
    let (services, latest) = watch::channel(None);
    let _services_task = AbortOnDrop(tokio::spawn(program_services(
        containers.clone(),
        latest,
        tx.clone(),
        interval,
    )));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                tx.send(heartbeat(containers)).await.map_err(|_| SessionError::Closed)?;
                if let Some(routes) = unrouted.take()
                    && let Err(e) = containers.set_routes(&routes).await
                {
                    tracing::debug!("routes, again: {e}");
                    unrouted = Some(routes);
                }
            }
            event = events.recv() => match event {
                Ok(status) => {
                    let msg = AgentMessage { msg: Some(agent_message::Msg::Event(ContainerEvent {
                        status: Some(status),
                        at_ms: berth_runtime::sys::time::now_ms(),
                    }))};
                    tx.send(msg).await.map_err(|_| SessionError::Closed)?;
                }
                // Missed events are covered by the next heartbeat's full state.
                Err(broadcast::error::RecvError::Lagged(n)) => tracing::debug!("{n} events skipped"),
                Err(broadcast::error::RecvError::Closed) => return Err(SessionError::Closed),
            },
            message = inbound.message() => match message {
                Ok(Some(m)) => {
                    if let Some(scheduler_message::Msg::Services(set)) = m.msg {
                        services.send_replace(Some(set));
                    } else {
                        on_message(containers, m, &mut unrouted).await;
                    }
                }
                Ok(None) => return Err(SessionError::Closed),
                Err(status) => return Err(SessionError::Refused { call: "Session", status }),
            },
        }
    }
}

type Client = NodeServiceClient<tonic::transport::Channel>;

/// Connects to the scheduler at `addr` and registers the node; the node network comes up
/// with the pod CIDR the scheduler assigned.
async fn register(
    containers: &Containers,
    agent_endpoint: &str,
    addr: &str,
) -> Result<(Client, RegisterResponse), SessionError> {
    let config = containers.config();
    let addr = addr.to_string();
    let endpoint = crate::dial::scheduler_endpoint(config, &addr)?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| SessionError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let mut client = NodeServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let registered = client
        .register(RegisterRequest {
            node_name: config.node_name.clone(),
            labels: config.labels.clone().into_iter().collect(),
            capacity: Some(containers.capacity()),
            node_address: config.node_address.clone(),
            agent_endpoint: agent_endpoint.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            allowed_bind_paths: config
                .allow_bind
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        })
        .await
        .map_err(|status| SessionError::Refused {
            call: "Register",
            status,
        })?
        .into_inner();
    tracing::info!(pod_cidr = %registered.pod_cidr, session = registered.session, "registered");
    if let Err(e) = containers.set_pod_cidr(&registered.pod_cidr).await {
        // Containers can still be adopted and reported; new ones fail with the reason.
        tracing::error!("node network: {e}");
    }
    Ok((client, registered))
}

/// Applies what the scheduler sent: an assignment set, a file set, or the cluster's pod
/// routes (those that cannot be installed yet are kept in `unrouted` for the next heartbeat).
async fn on_message(
    containers: &Containers,
    message: SchedulerMessage,
    unrouted: &mut Option<Vec<berth_proto::v1::PodRoute>>,
) {
    match message.msg {
        Some(scheduler_message::Msg::Assignments(set)) => {
            let generation = set.generation;
            let count = set.assignments.len();
            if containers.apply(set) {
                tracing::info!(generation, count, "applied assignments");
            }
        }
        Some(scheduler_message::Msg::Routes(routes)) => {
            *unrouted = None;
            if let Err(e) = containers.set_routes(&routes.routes).await {
                tracing::warn!("routes (trying again): {e}");
                *unrouted = Some(routes.routes);
            }
        }
        Some(scheduler_message::Msg::Services(set)) => {
            // Handled by the session, which acknowledges it (see `apply_services`).
            tracing::debug!(generation = set.generation, "service set outside a session");
        }
        // Before the assignments that need it; containers waiting for a version start.
        Some(scheduler_message::Msg::Files(set)) => {
            let generation = set.generation;
            let (configs, secrets) = (set.configs.len(), set.secrets.len());
            if containers.set_files(set) {
                tracing::info!(generation, configs, secrets, "applied files");
            } else {
                tracing::debug!(generation, "ignoring an older file set");
            }
        }
        None => tracing::debug!("empty scheduler message"),
    }
}

/// Aborts the task when the session that started it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Programs every ServiceSet the session receives (the latest one when several arrived during
/// a transaction); a set that failed is tried again every `retry` until a newer one comes.
/// Ends with the session.
async fn program_services(
    containers: Containers,
    mut latest: watch::Receiver<Option<ServiceSet>>,
    tx: mpsc::Sender<AgentMessage>,
    retry: Duration,
) {
    loop {
        let set = latest.borrow_and_update().clone();
        let again = match set {
            Some(set) => match apply_services(&containers, set, &tx).await {
                Ok(again) => again.is_some(),
                Err(_) => return,
            },
            None => false,
        };
        if again {
            tokio::select! {
                changed = latest.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(retry) => {}
            }
        } else if latest.changed().await.is_err() {
            return;
        }
    }
}

/// Programs the load balancer from `set` and acknowledges it up the session. Returns the set
/// when it should be tried again on the next heartbeat (the network is not up yet, or nft
/// failed); an invalid set is logged and dropped, since trying again cannot help.
async fn apply_services(
    containers: &Containers,
    set: ServiceSet,
    tx: &mpsc::Sender<AgentMessage>,
) -> Result<Option<ServiceSet>, SessionError> {
    use crate::net::{NetError, ServicesOutcome};
    let count = set.services.len();
    match containers.apply_services(&set).await {
        Ok(ServicesOutcome::Applied {
            generation,
            flushed,
            rebuilt,
        }) => {
            tracing::info!(generation, count, flushed, rebuilt, "applied services");
            let ack = AgentMessage {
                msg: Some(agent_message::Msg::ServicesApplied(ServicesApplied {
                    generation,
                })),
            };
            tx.send(ack).await.map_err(|_| SessionError::Closed)?;
            Ok(None)
        }
        Ok(ServicesOutcome::Stale { applied }) => {
            tracing::debug!(
                generation = set.generation,
                applied,
                "ignoring an older service set"
            );
            Ok(None)
        }
        Err(crate::error::AgentError::Net(e @ NetError::InvalidService { .. })) => {
            tracing::error!(generation = set.generation, "service set refused: {e}");
            Ok(None)
        }
        Err(crate::error::AgentError::Dns(e @ crate::dns::DnsError::InvalidService { .. })) => {
            tracing::error!(
                generation = set.generation,
                "service set refused by DNS: {e}"
            );
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(generation = set.generation, "services (trying again): {e}");
            Ok(Some(set))
        }
    }
}

/// `--scheduler`'s addresses: one, or several schedulers sharing an etcd, comma-separated.
fn scheduler_addresses(flag: &str) -> Vec<String> {
    let list: Vec<String> = flag
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        vec![flag.to_string()]
    } else {
        list
    }
}

fn heartbeat(containers: &Containers) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Heartbeat(Heartbeat {
            capacity: Some(containers.capacity()),
            containers: containers.statuses(),
            applied_generation: containers.applied_generation(),
            applied_service_generation: containers.applied_service_generation(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses_split_on_commas() {
        assert_eq!(
            scheduler_addresses("http://a:1, http://b:2,,http://c:3"),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
        assert_eq!(scheduler_addresses("http://a:1"), ["http://a:1"]);
    }
}
