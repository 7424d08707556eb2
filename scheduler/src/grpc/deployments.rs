//! DeploymentService: what pipelines and the CLI call. Writes go to the store with revision
//! checks (durable before the call returns); the controller, watching the store, acts on
//! them. Logs and Explain are proxied to the agent of the node that runs the container.

use std::sync::Arc;

use berth_proto::v1::agent_service_client::AgentServiceClient;
use berth_proto::v1::deployment_service_server::DeploymentService;
use berth_proto::v1::*;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::BoxStream;
use crate::clock::now_ms;
use crate::controller::Controller;
use crate::deployments::{self, Deployments};
use crate::error::SchedError;

#[derive(Debug, Clone)]
pub(crate) struct DeployApi {
    pub deployments: Deployments,
    /// The control loop: its described state of each deployment, and the live cluster.
    pub controller: Arc<Controller>,
    /// How to reach agents (mutual TLS when the scheduler has it).
    pub security: crate::auth::Security,
}

impl DeployApi {
    /// A client of the agent that runs the container `target` names (see `Cluster::locate`),
    /// and the container's id.
    async fn agent_of(
        &self,
        target: &str,
    ) -> Result<(String, AgentServiceClient<tonic::transport::Channel>), SchedError> {
        let described = self.controller.status(target);
        let (id, endpoint) = self.controller.cluster.locate(target, described.as_ref())?;
        let client = self.security.connect_agent(&endpoint).await?;
        Ok((id, client))
    }
}

#[tonic::async_trait]
impl DeploymentService for DeployApi {
    async fn list_volumes(
        &self,
        _request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let volumes = crate::volumes::list(self.controller.store.as_ref()).await?;
        Ok(Response::new(ListVolumesResponse { volumes }))
    }
    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| SchedError::invalid("spec", "missing"))?;
        let allocatable = self.controller.cluster.allocatable();
        // Binds need a node that allows them; the others are the spec's own rules.
        let allowed = crate::volumes::allow_lists(&self.controller.cluster);
        let defaulted = crate::spec::with_defaults(spec.clone());
        crate::spec::mounts::check_binds_allowed(&defaulted, &allowed)?;
        let (name, changed) = self.deployments.apply(spec, &allocatable, now_ms()).await?;
        Ok(Response::new(ApplyResponse {
            deployment: Some(self.controller.current(&name).await?),
            changed,
        }))
    }

    async fn get(
        &self,
        request: Request<GetDeploymentRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let name = request.into_inner().name;
        Ok(Response::new(self.controller.current(&name).await?))
    }

    async fn list(
        &self,
        _request: Request<ListDeploymentsRequest>,
    ) -> Result<Response<ListDeploymentsResponse>, Status> {
        let mut deployments = Vec::new();
        for name in self.deployments.names().await? {
            deployments.push(self.controller.current(&name).await?);
        }
        Ok(Response::new(ListDeploymentsResponse { deployments }))
    }

    async fn delete(
        &self,
        request: Request<DeleteDeploymentRequest>,
    ) -> Result<Response<DeleteDeploymentResponse>, Status> {
        self.deployments.delete(&request.into_inner().name).await?;
        Ok(Response::new(DeleteDeploymentResponse {}))
    }

    async fn scale(&self, request: Request<ScaleRequest>) -> Result<Response<Deployment>, Status> {
        let req = request.into_inner();
        self.deployments.scale(&req.name, req.replicas).await?;
        Ok(Response::new(self.controller.current(&req.name).await?))
    }

    async fn approve(
        &self,
        request: Request<ApproveRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let name = request.into_inner().name;
        self.deployments.approve(&name, now_ms()).await?;
        Ok(Response::new(self.controller.current(&name).await?))
    }

    async fn reject(
        &self,
        request: Request<RejectRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let name = request.into_inner().name;
        self.deployments.reject_awaiting(&name, "rejected").await?;
        Ok(Response::new(self.controller.current(&name).await?))
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let req = request.into_inner();
        self.deployments
            .rollback(&req.name, req.to_revision, now_ms())
            .await?;
        Ok(Response::new(self.controller.current(&req.name).await?))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let revisions = self.deployments.history(&request.into_inner().name).await?;
        Ok(Response::new(HistoryResponse { revisions }))
    }

    type WatchStream = BoxStream<RolloutEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let updates = self.controller.events.subscribe();
        let first = self.controller.current(&req.name).await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(watch(self.clone(), req, first, updates, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_nodes(
        &self,
        _request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let nodes = self.controller.cluster.node_infos(now_ms());
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn list_services(
        &self,
        _request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let services = self.controller.cluster.services();
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn list_containers(
        &self,
        request: Request<ListClusterContainersRequest>,
    ) -> Result<Response<ListClusterContainersResponse>, Status> {
        let only = request.into_inner().deployment;
        let containers = self.controller.cluster.containers(&only);
        Ok(Response::new(ListClusterContainersResponse { containers }))
    }

    type LogsStream = BoxStream<LogChunk>;

    async fn logs(
        &self,
        request: Request<ClusterLogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let (id, mut client) = self.agent_of(&req.target).await?;
        let stream = client
            .logs(LogsRequest {
                container_id: id,
                follow: req.follow,
                tail_lines: req.tail_lines,
            })
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn explain(
        &self,
        request: Request<ClusterExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let target = request.into_inner().target;
        let (id, mut client) = self.agent_of(&target).await?;
        let reply = client.explain(ExplainRequest { container_id: id }).await?;
        Ok(reply)
    }
}

/// Streams the events of the revision `first` describes until one is final, the watcher
/// goes, or the deployment is deleted.
async fn watch(
    api: DeployApi,
    req: WatchRequest,
    first: Deployment,
    mut updates: tokio::sync::broadcast::Receiver<Deployment>,
    tx: mpsc::Sender<Result<RolloutEvent, Status>>,
) {
    let watched = first.revision;
    let mut current = Some(first);
    loop {
        if let Some(d) = current.take() {
            let event = deployments::event_for(&d, watched, req.stop_at_approval, now_ms());
            let last = event.r#final;
            if tx.send(Ok(event)).await.is_err() || last {
                return;
            }
        }
        match updates.recv().await {
            Ok(d) if d.spec.as_ref().is_some_and(|s| s.name == req.name) => current = Some(d),
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                current = api.controller.current(&req.name).await.ok();
            }
            Err(RecvError::Closed) => return,
        }
        if current.is_none() && api.deployments.load(&req.name).await.is_err() {
            let gone = SchedError::DeploymentDeleted(req.name.clone());
            let _ = tx.send(Err(gone.into())).await;
            return;
        }
    }
}
