//! DeploymentService: what pipelines and the CLI call. Writes go to the store with revision
//! checks (durable before the call returns); the controller, watching the store, acts on
//! them. Logs and Explain are proxied to the agent of the node that runs the container.
//! Every request names an environment: names are qualified on the way in and answered plain,
//! with `Deployment.environment`, on the way out (see `environments::key`).

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
use crate::environments::{Environments, key};
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
    pub environments: Environments,
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

    /// Promote, audited like an Apply in the target environment: from the release serving
    /// there to the one promoted, with "FROM -> TO" as the detail.
    pub(crate) async fn promote_audited(
        &self,
        who: String,
        req: PromoteRequest,
    ) -> Result<PromoteResponse, Status> {
        let from = self
            .serving(&key::qualified(&req.to_environment, &req.app))
            .await;
        let result = super::promote::promote(self, req.clone())
            .await
            .map_err(Status::from);
        let unchanged = result.as_ref().is_ok_and(|r| !r.changed);
        let mut call = Call::new(who, "promote", &req.to_environment, &req.app);
        call.detail = format!(
            "{} -> {}",
            key::normalize(&req.from_environment),
            key::normalize(&req.to_environment)
        );
        self.audited(call, from, result, unchanged).await
    }

    /// The qualified name of deployment `name` in environment `env`, which must exist.
    pub(crate) async fn qualify(&self, env: &str, name: &str) -> Result<String, SchedError> {
        if name.contains('.') {
            return Err(SchedError::invalid(
                "name",
                format!("{name:?} has a '.': name the environment in the request's `environment`"),
            ));
        }
        crate::spec::validate_lookup_name("name", name)?;
        self.environments.get(env).await?;
        Ok(key::qualified(env, name))
    }

    /// The deployment as callers see it: its plain name, environment and the release its
    /// stable revision runs.
    pub(crate) async fn outward(&self, mut d: Deployment) -> Result<Deployment, SchedError> {
        let qualified = d.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let (env, name) = key::split(&qualified);
        d.environment = env.to_string();
        if d.release.is_empty() && d.stable_revision != 0 {
            let stable = self
                .deployments
                .spec_of(&qualified, d.stable_revision)
                .await?;
            d.release = stable.as_ref().map(release_id).unwrap_or_default();
        }
        if let Some(spec) = d.spec.as_mut() {
            spec.name = name.to_string();
        }
        Ok(d)
    }

    /// The deployment with qualified name `qualified`, as callers see it.
    pub(crate) async fn current(&self, qualified: &str) -> Result<Deployment, SchedError> {
        let d = self.controller.current(qualified).await?;
        self.outward(d).await
    }

    /// Applies `spec` in the environment it names (the spec's name is plain): the one path
    /// Apply and Promote share.
    pub(crate) async fn apply_spec(
        &self,
        mut spec: DeploymentSpec,
    ) -> Result<(Deployment, bool), SchedError> {
        crate::spec::validate_name("spec.name", &spec.name)?;
        let env = key::normalize(&spec.environment).to_string();
        self.environments.get(&env).await?;
        spec.name = key::qualified(&env, &spec.name);
        spec.environment = key::stored(&env);
        let allocatable = self.controller.cluster.allocatable();
        // Binds need a node that allows them; the others are the spec's own rules.
        let allowed = crate::volumes::allow_lists(&self.controller.cluster);
        let defaulted = crate::spec::with_defaults(spec.clone());
        crate::spec::mounts::check_binds_allowed(&defaulted, &allowed)?;
        let (name, changed) = self.deployments.apply(spec, &allocatable, now_ms()).await?;
        Ok((self.current(&name).await?, changed))
    }

    /// The target of Logs or Explain: deployment `target` of `env` when there is one, else
    /// `target` as given (a container id).
    async fn target_in(&self, env: &str, target: &str) -> Result<String, SchedError> {
        if target.contains('.') || key::normalize(env) == key::DEFAULT {
            return Ok(target.to_string());
        }
        let qualified = self.qualify(env, target).await?;
        Ok(match self.deployments.load(&qualified).await {
            Ok(_) => qualified,
            Err(_) => target.to_string(),
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
        let to = self
            .moving_to(&key::qualified(call.environment, call.app))
            .await;
        let outcome = match &result {
            Ok(_) if unchanged => "unchanged".to_string(),
            r => audit::outcome(r),
        };
        self.audit
            .record(AuditEntry {
                who: call.who,
                action: call.action.to_string(),
                environment: key::normalize(call.environment).to_string(),
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
        let from = self.serving(&key::qualified(&env, &app)).await;
        let result = self.apply_spec(spec).await.map_err(Status::from);
        let unchanged = result.as_ref().is_ok_and(|(_, changed)| !changed);
        let call = Call::new(who, "apply", &env, &app);
        let (deployment, changed) = self.audited(call, from, result, unchanged).await?;
        Ok(Response::new(ApplyResponse {
            deployment: Some(deployment),
            changed,
        }))
    }

    async fn get(
        &self,
        request: Request<GetDeploymentRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let req = request.into_inner();
        let name = self.qualify(&req.environment, &req.name).await?;
        Ok(Response::new(self.current(&name).await?))
    }
    async fn list(
        &self,
        request: Request<ListDeploymentsRequest>,
    ) -> Result<Response<ListDeploymentsResponse>, Status> {
        let req = request.into_inner();
        let env = key::normalize(&req.environment);
        if !req.all_environments {
            self.environments.get(env).await?;
        }
        let mut deployments = Vec::new();
        for name in self.deployments.names().await? {
            if req.all_environments || key::split(&name).0 == env {
                deployments.push(self.current(&name).await?);
            }
        }
        Ok(Response::new(ListDeploymentsResponse { deployments }))
    }

    async fn delete(
        &self,
        request: Request<DeleteDeploymentRequest>,
    ) -> Result<Response<DeleteDeploymentResponse>, Status> {
        let who = audit::who(request.extensions());
        let req = request.into_inner();
        let from = self
            .serving(&key::qualified(&req.environment, &req.name))
            .await;
        let result = match self.qualify(&req.environment, &req.name).await {
            Ok(name) => self.deployments.delete(&name).await,
            Err(e) => Err(e),
        };
        let call = Call::new(who, "delete", &req.environment, &req.name);
        self.audited(call, from, result.map_err(Status::from), false)
            .await?;
        Ok(Response::new(DeleteDeploymentResponse {}))
    }

    async fn scale(&self, request: Request<ScaleRequest>) -> Result<Response<Deployment>, Status> {
        let who = audit::who(request.extensions());
        let req = request.into_inner();
        let qualified = key::qualified(&req.environment, &req.name);
        let from = self.serving(&qualified).await;
        let before = match self.deployments.load(&qualified).await {
            Ok((rec, _)) => rec.spec.map_or(0, |s| s.replicas).to_string(),
            Err(_) => "?".into(),
        };
        let result = match self.qualify(&req.environment, &req.name).await {
            Ok(name) => self.deployments.scale(&name, req.replicas).await,
            Err(e) => Err(e),
        };
        let mut call = Call::new(who, "scale", &req.environment, &req.name);
        call.detail = format!("{before} -> {}", req.replicas);
        self.audited(call, from, result.map_err(Status::from), false)
            .await?;
        Ok(Response::new(self.current(&qualified).await?))
    }

    async fn approve(
        &self,
        request: Request<ApproveRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let who = audit::who(request.extensions());
        let req = request.into_inner();
        let qualified = key::qualified(&req.environment, &req.name);
        let from = self.serving(&qualified).await;
        let result = match self.qualify(&req.environment, &req.name).await {
            Ok(name) => self.deployments.approve(&name, now_ms()).await,
            Err(e) => Err(e),
        };
        let call = Call::new(who, "approve", &req.environment, &req.name);
        self.audited(call, from, result.map_err(Status::from), false)
            .await?;
        Ok(Response::new(self.current(&qualified).await?))
    }

    async fn reject(
        &self,
        request: Request<RejectRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let who = audit::who(request.extensions());
        let req = request.into_inner();
        let qualified = key::qualified(&req.environment, &req.name);
        let from = self.serving(&qualified).await;
        // The revision rejected is the one the entry names as "to".
        let rejected = self.moving_to(&qualified).await;
        let result = match self.qualify(&req.environment, &req.name).await {
            Ok(name) => self.deployments.reject_awaiting(&name, "rejected").await,
            Err(e) => Err(e),
        };
        let mut call = Call::new(who, "reject", &req.environment, &req.name);
        if result.is_ok() {
            call.detail = format!(
                "revision {} ({}) rejected",
                rejected.revision, rejected.release
            );
        }
        self.audited(call, from, result.map_err(Status::from), false)
            .await?;
        Ok(Response::new(self.current(&qualified).await?))
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let who = audit::who(request.extensions());
        let req = request.into_inner();
        let name = key::qualified(&req.environment, &req.name);
        let from = self.serving(&name).await;
        let result = match self.qualify(&req.environment, &req.name).await {
            Ok(name) => {
                self.deployments
                    .rollback(&name, req.to_revision, now_ms())
                    .await
            }
            Err(e) => Err(e),
        };
        let mut call = Call::new(who, "rollback", &req.environment, &req.name);
        if req.to_revision != 0 {
            call.detail = format!("to revision {}", req.to_revision);
        }
        self.audited(call, from, result.map_err(Status::from), false)
            .await?;
        Ok(Response::new(self.current(&name).await?))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let req = request.into_inner();
        let name = self.qualify(&req.environment, &req.name).await?;
        let mut revisions = self.deployments.history(&name).await?;
        for r in &mut revisions {
            if let Some(spec) = r.spec.as_mut() {
                spec.name = req.name.clone();
            }
        }
        Ok(Response::new(HistoryResponse { revisions }))
    }

    type WatchStream = BoxStream<RolloutEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut req = request.into_inner();
        req.name = self.qualify(&req.environment, &req.name).await?;
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
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let env = request.into_inner().environment;
        let mut services = self.controller.cluster.services();
        if !env.is_empty() {
            self.environments.get(&env).await?;
            let env = key::normalize(&env);
            services.retain(|s| key::split(&s.name).0 == env);
        }
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn list_containers(
        &self,
        request: Request<ListClusterContainersRequest>,
    ) -> Result<Response<ListClusterContainersResponse>, Status> {
        let req = request.into_inner();
        let only = if req.deployment.is_empty() {
            String::new()
        } else {
            self.qualify(&req.environment, &req.deployment).await?
        };
        let mut containers = self.controller.cluster.containers(&only);
        if only.is_empty() && !req.environment.is_empty() {
            self.environments.get(&req.environment).await?;
            let env = key::normalize(&req.environment);
            containers.retain(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| key::split(&s.deployment).0 == env)
            });
        }
        Ok(Response::new(ListClusterContainersResponse { containers }))
    }

    type LogsStream = BoxStream<LogChunk>;

    async fn logs(
        &self,
        request: Request<ClusterLogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let target = self.target_in(&req.environment, &req.target).await?;
        let (id, mut client) = self.agent_of(&target).await?;
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
        let req = request.into_inner();
        let target = self.target_in(&req.environment, &req.target).await?;
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
            let mut event = deployments::event_for(&d, watched, req.stop_at_approval, now_ms());
            event.deployment = key::split(&event.deployment).1.to_string();
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
