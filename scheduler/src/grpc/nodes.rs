//! NodeService: agents register, then keep a session stream open (heartbeats and events up,
//! assignment sets, routes and service sets down; service acknowledgements up). The domain is `crate::nodes`.

use berth_proto::v1::node_service_server::NodeService;
use berth_proto::v1::{AgentMessage, RegisterRequest, RegisterResponse, agent_message};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::BoxStream;
use crate::auth::Caller;
use crate::error::SchedError;
use crate::nodes::Nodes;

#[derive(Debug, Clone)]
pub(crate) struct NodeApi {
    pub nodes: Nodes,
}

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let req = request.into_inner();
        let (record, session) = self.nodes.register(caller.as_ref(), &req).await?;
        Ok(Response::new(RegisterResponse {
            pod_cidr: record.pod_cidr,
            heartbeat_interval_ms: self.nodes.heartbeat_interval_ms(),
            session,
        }))
    }

    type SessionStream = BoxStream<berth_proto::v1::SchedulerMessage>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let mut uplink = request.into_inner();
        let hello = match uplink.message().await? {
            Some(AgentMessage {
                msg: Some(agent_message::Msg::Hello(h)),
            }) => h,
            _ => {
                return Err(SchedError::invalid(
                    "session",
                    "the first message of a session must be a Hello",
                )
                .into());
            }
        };
        let (tx, rx) = mpsc::channel(64);
        self.nodes.open_session(caller.as_ref(), &hello, tx)?;
        tokio::spawn(serve_uplink(
            self.nodes.clone(),
            hello.node_name,
            hello.session,
            uplink,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}

/// Feeds the session's heartbeats and events to the cluster until the agent hangs up.
async fn serve_uplink(
    nodes: Nodes,
    node: String,
    session: u64,
    mut uplink: Streaming<AgentMessage>,
) {
    let cluster = &nodes.cluster;
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
                    hb.applied_service_generation,
                );
            }
            Ok(Some(AgentMessage {
                msg: Some(agent_message::Msg::ServicesApplied(applied)),
            })) => {
                cluster.services_applied(&node, session, applied.generation);
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
}
