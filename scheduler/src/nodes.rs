//! NodeService: agents register (getting a stable pod CIDR) and keep a session open for
//! heartbeats and events up, assignment sets and routes down.

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::v1::node_service_server::NodeService;
use berth_proto::v1::{
    AgentMessage, PodRoute, RegisterRequest, RegisterResponse, RouteSet, SchedulerMessage,
    agent_message, scheduler_message,
};
use futures::Stream;
use ipnet::Ipv4Net;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::cluster::Cluster;
use crate::error::SchedError;
use crate::records::{self, NODES, NodeRecord, node_key};
use crate::store::{Expect, Store};

#[derive(Debug, Clone)]
pub struct NodeApi {
    pub store: Arc<dyn Store>,
    pub cluster: Arc<Cluster>,
    /// Node pod CIDRs are carved out of this, one /24 each.
    pub pod_network: Ipv4Net,
}

impl NodeApi {
    /// The node's record: its pod CIDR is allocated once and kept across registrations.
    async fn upsert(&self, req: &RegisterRequest) -> Result<NodeRecord, SchedError> {
        crate::spec::validate_name("node_name", &req.node_name)
            .or_else(|_| validate_node_name(&req.node_name))?;
        loop {
            let key = node_key(&req.node_name);
            let existing = self.store.get(&key).await?;
            let (mut record, expect) = match &existing {
                Some(kv) => (
                    records::decode::<NodeRecord>(&key, &kv.value)?,
                    Expect::Revision(kv.mod_revision),
                ),
                None => (
                    NodeRecord {
                        name: req.node_name.clone(),
                        ..Default::default()
                    },
                    Expect::Absent,
                ),
            };
            if record.pod_cidr.is_empty() {
                record.pod_cidr = self.free_cidr().await?.to_string();
            }
            record.labels = req.labels.clone();
            record.address = req.node_address.clone();
            record.agent_endpoint = req.agent_endpoint.clone();
            let cap = req.capacity.unwrap_or_default();
            record.allocatable = cap.allocatable;
            record.total = cap.total;
            match self.store.put(&key, records::encode(&record), expect).await {
                Ok(_) => return Ok(record),
                // Another registration of the same node raced us (or a CIDR was taken): again.
                Err(crate::store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn free_cidr(&self) -> Result<Ipv4Net, SchedError> {
        let (nodes, _) = self.store.list(NODES).await?;
        let used: std::collections::BTreeSet<String> = nodes
            .iter()
            .filter_map(|kv| records::decode::<NodeRecord>(&kv.key, &kv.value).ok())
            .map(|n| n.pod_cidr)
            .collect();
        let subnets = self
            .pod_network
            .subnets(24)
            .map_err(|e| SchedError::invalid("pod_network", e.to_string()))?;
        subnets
            .into_iter()
            .find(|s| !used.contains(&s.to_string()))
            .ok_or_else(|| {
                SchedError::FailedPrecondition(format!(
                    "no /24 left in the pod network {}",
                    self.pod_network
                ))
            })
    }

    /// Routes to every node's pod CIDR, for every node (each skips its own).
    pub fn routes(&self) -> SchedulerMessage {
        let routes = self.cluster.with_nodes(|nodes| {
            nodes
                .values()
                .filter(|n| !n.record.pod_cidr.is_empty() && !n.record.address.is_empty())
                .map(|n| PodRoute {
                    node_name: n.record.name.clone(),
                    pod_cidr: n.record.pod_cidr.clone(),
                    node_address: n.record.address.clone(),
                })
                .collect()
        });
        SchedulerMessage {
            msg: Some(scheduler_message::Msg::Routes(RouteSet { routes })),
        }
    }
}

/// Refuses a caller that is not the node it speaks for: with authentication on (a caller was
/// admitted), only that node's own certificate may register it or run its session; a token or
/// an identity a standby forwarded never stands for a node. Without authentication (TLS off,
/// no caller) there is nothing to check against.
fn check_node_identity(caller: Option<&Caller>, node: &str, call: &str) -> Result<(), SchedError> {
    let Some(caller) = caller else {
        return Ok(());
    };
    let reason = match caller.certificate_name() {
        Some(cn) if cn == node => return Ok(()),
        Some(cn) => format!("certificate for node {cn} cannot act as node {node}"),
        None => {
            format!("{caller} cannot act as node {node}: a node acts under its own certificate")
        }
    };
    tracing::warn!(call, caller = %caller, node = %node, reason = %reason, "refused");
    Err(SchedError::PermissionDenied(reason))
}

fn validate_node_name(name: &str) -> Result<(), SchedError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SchedError::invalid(
            "node_name",
            format!("{name:?} is not a valid node name"),
        ))
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<SchedulerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let req = request.into_inner();
        check_node_identity(caller.as_ref(), &req.node_name, "Register")?;
        let record = self.upsert(&req).await?;
        let session = self
            .cluster
            .register(record.clone(), req.capacity.unwrap_or_default());
        tracing::info!(node = %record.name, pod_cidr = %record.pod_cidr, "node registered");
        Ok(Response::new(RegisterResponse {
            pod_cidr: record.pod_cidr,
            heartbeat_interval_ms: self.cluster.heartbeat_interval.as_millis() as u32,
            session,
        }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let mut uplink = request.into_inner();
        let hello = match uplink.message().await? {
            Some(AgentMessage {
                msg: Some(agent_message::Msg::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be a Hello",
                ));
            }
        };
        // Every heartbeat and event of the session counts for the Hello's node: checked once here.
        check_node_identity(caller.as_ref(), &hello.node_name, "Session")?;
        let (tx, rx) = mpsc::channel(64);
        let first = self
            .cluster
            .connect(&hello.node_name, hello.session, tx.clone())?;
        for m in first {
            let _ = tx.try_send(Ok(m));
        }
        // Everyone learns the routes to the nodes known now (this one included).
        self.cluster.broadcast(&self.routes());
        tracing::info!(node = %hello.node_name, session = hello.session, "session open");
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let node = hello.node_name;
            let session = hello.session;
            loop {
                match uplink.message().await {
                    Ok(Some(AgentMessage {
                        msg: Some(agent_message::Msg::Heartbeat(hb)),
                    })) => {
                        cluster.heartbeat(
                            &node,
                            session,
                            hb.capacity.unwrap_or_default(),
                            hb.containers,
                        );
                    }
                    Ok(Some(AgentMessage {
                        msg: Some(agent_message::Msg::Event(ev)),
                    })) => {
                        if let Some(status) = ev.status {
                            cluster.event(&node, session, status);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            tracing::info!(%node, session, "session closed");
            cluster.disconnect(&node, session);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::tls::Role;

    use super::*;
    use crate::auth::Via;

    fn caller(name: &str, via: Via) -> Caller {
        Caller {
            name: name.into(),
            role: Role::Node,
            via,
        }
    }

    #[test]
    fn only_a_nodes_own_certificate_speaks_for_it() {
        assert!(check_node_identity(None, "n1", "Register").is_ok());
        let own = caller("n1", Via::Certificate);
        assert!(check_node_identity(Some(&own), "n1", "Register").is_ok());
        let other = check_node_identity(Some(&own), "n2", "Session").unwrap_err();
        assert!(
            other
                .to_string()
                .contains("certificate for node n1 cannot act as node n2"),
            "{other}"
        );
        let forwarded = caller("n1", Via::Forwarded { by: "s1".into() });
        let refused = check_node_identity(Some(&forwarded), "n1", "Register").unwrap_err();
        assert!(
            matches!(refused, SchedError::PermissionDenied(_)),
            "{refused}"
        );
    }
}
