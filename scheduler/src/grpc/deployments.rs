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
use crate::audit::{self, Audit};
use crate::clock::now_ms;
use crate::controller::Controller;
use crate::deployments::{self, Deployments};
use crate::error::SchedError;
use crate::release_id::release_id;

#[derive(Debug, Clone)]
pub(crate) struct DeployApi {
    pub deployments: Deployments,
    /// The control loop: its described state of each deployment, and the live cluster.
    pub controller: Arc<Controller>,
    /// How to reach agents (mutual TLS when the scheduler has it).
    pub security: crate::auth::Security,
    /// Every mutating call appends an entry, refused ones included.
    pub audit: Audit,
}

/// A release and revision a call moves a deployment from or to.
#[derive(Debug, Default)]
struct Point {
    release: String,
    revision: u64,
}

/// What an audit entry says about a call, apart from where it moved the deployment.
struct Call<'a> {
    who: String,
    action: &'a str,
    environment: &'a str,
    app: &'a str,
    detail: String,
}

impl<'a> Call<'a> {
    fn new(who: String, action: &'a str, environment: &'a str, app: &'a str) -> Self {
        Self {
            who,
            action,
            environment,
            app,
            detail: String::new(),
        }
    }
}

/// The name a deployment is stored under: `app` in the default environment, `app.env` in
/// another (the environments module owns this mapping once it lands).
fn qualified(env: &str, app: &str) -> String {
    match env {
        "" | "default" => app.to_string(),
        env => format!("{app}.{env}"),
    }
}

impl DeployApi {
    /// The release and revision serving now (default when the deployment does not exist).
    async fn serving(&self, name: &str) -> Point {
        match self.deployments.load(name).await {
            Ok((rec, _)) => Point {
                release: deployments::stable_release(&rec),
                revision: rec.stable_revision,
            },
            Err(_) => Point::default(),
        }
    }

    /// The release and revision the deployment moves to (default when it does not exist).
    async fn moving_to(&self, name: &str) -> Point {
        match self.deployments.load(name).await {
            Ok((rec, _)) => Point {
                release: rec.spec.as_ref().map(release_id).unwrap_or_default(),
                revision: rec.revision,
            },
            Err(_) => Point::default(),
        }
    }

    /// Apply's work: the spec checked against the cluster, stored as a new revision when it
    /// changed.
    async fn apply_spec(&self, spec: DeploymentSpec) -> Result<ApplyResponse, Status> {
        let allocatable = self.controller.cluster.allocatable();
        // Binds need a node that allows them; the others are the spec's own rules.
        let allowed = crate::volumes::allow_lists(&self.controller.cluster);
        let defaulted = crate::spec::with_defaults(spec.clone());
        crate::spec::mounts::check_binds_allowed(&defaulted, &allowed)?;
        let (name, changed) = self.deployments.apply(spec, &allocatable, now_ms()).await?;
        Ok(ApplyResponse {
            deployment: Some(self.controller.current(&name).await?),
            changed,
        })
    }

    /// Appends the entry of `call`, which moved the deployment from `from` and ended with
    /// `result`; returns `result`.
    async fn audited<T>(
        &self,
        call: Call<'_>,
        from: Point,
        result: Result<T, Status>,
        unchanged: bool,
    ) -> Result<T, Status> {
        let to = self.moving_to(&qualified(call.environment, call.app)).await;
        let outcome = match &result {
            Ok(_) if unchanged => "unchanged".to_string(),
            r => audit::outcome(r),
        };
        self.audit
            .record(AuditEntry {
                who: call.who,
                action: call.action.to_string(),
                environment: audit::env_name(call.environment).to_string(),
                app: call.app.to_string(),
                from_release: from.release,
                to_release: to.release,
                from_revision: from.revision,
                to_revision: to.revision,
                outcome,
                detail: call.detail,
                ..Default::default()
            })
            .await;
        result
    }

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
        let who = audit::who(request.extensions());
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| SchedError::invalid("spec", "missing"))?;
        let (app, env) = (spec.name.clone(), spec.environment.clone());
        let from = self.serving(&qualified(&env, &app)).await;
        let result = self.apply_spec(spec).await;
        let unchanged = result.as_ref().is_ok_and(|r| !r.changed);
        let call = Call::new(who, "apply", &env, &app);
        let reply = self.audited(call, from, result, unchanged).await?;
        Ok(Response::new(reply))
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
        let who = audit::who(request.extensions());
        let req = request.into_inner();
        let from = self.serving(&req.name).await;
        let result = self
            .deployments
            .delete(&req.name)
            .await
            .map_err(Status::from);
        let call = Call::new(who, "delete", &req.environment, &req.name);
        self.audited(call, from, result, false).await?;
        Ok(Response::new(DeleteDeploymentResponse {}))
    }

    async fn scale(&self, request: Request<ScaleRequest>) -> Result<Response<Deployment>, Status> {
        let who = audit::who(request.extensions());
        let req = request.into_inner();
        let from = self.serving(&req.name).await;
        let before = match self.deployments.load(&req.name).await {
            Ok((rec, _)) => rec.spec.map_or(0, |s| s.replicas).to_string(),
            Err(_) => "?".into(),
        };
        let result = self.deployments.scale(&req.name, req.replicas).await;
        let mut call = Call::new(who, "scale", &req.environment, &req.name);
        call.detail = format!("{before} -> {}", req.replicas);
        self.audited(call, from, result.map_err(Status::from), false)
            .await?;
        Ok(Response::new(self.controller.current(&req.name).await?))
    }

    async fn approve(
        &self,
        request: Request<ApproveRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let who = audit::who(request.extensions());
        let req = request.into_inner();
        let from = self.serving(&req.name).await;
        let result = self.deployments.approve(&req.name, now_ms()).await;
        let call = Call::new(who, "approve", &req.environment, &req.name);
        self.audited(call, from, result.map_err(Status::from), false)
            .await?;
        Ok(Response::new(self.controller.current(&req.name).await?))
    }

    async fn reject(
        &self,
        request: Request<RejectRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let who = audit::who(request.extensions());
        let req = request.into_inner();
        let from = self.serving(&req.name).await;
        // The revision rejected is the one the entry names as "to".
        let rejected = self.moving_to(&req.name).await;
        let result = self
            .deployments
            .reject_awaiting(&req.name, "rejected")
            .await;
        let mut call = Call::new(who, "reject", &req.environment, &req.name);
        if result.is_ok() {
            call.detail = format!(
                "revision {} ({}) rejected",
                rejected.revision, rejected.release
            );
        }
        self.audited(call, from, result.map_err(Status::from), false)
            .await?;
        Ok(Response::new(self.controller.current(&req.name).await?))
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let who = audit::who(request.extensions());
        let req = request.into_inner();
        let from = self.serving(&req.name).await;
        let result = self
            .deployments
            .rollback(&req.name, req.to_revision, now_ms())
            .await;
        let mut call = Call::new(who, "rollback", &req.environment, &req.name);
        if req.to_revision != 0 {
            call.detail = format!("to revision {}", req.to_revision);
        }
        self.audited(call, from, result.map_err(Status::from), false)
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
