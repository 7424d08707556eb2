//! DeploymentService: what pipelines and the CLI call. Writes go to the store with revision
//! checks (durable before the call returns); the controller, watching the store, acts on them.

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::v1::agent_service_client::AgentServiceClient;
use berth_proto::v1::deployment_service_server::DeploymentService;
use berth_proto::v1::*;
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::clock::now_ms;
use crate::controller::Controller;
use crate::error::SchedError;
use crate::records::{
    self, DEPLOYMENTS, DeploymentRecord, deployment_key, revision_key, revisions_prefix,
};
use crate::spec;
use crate::store::{Expect, Op, Store, StoreError};

#[derive(Debug, Clone)]
pub(crate) struct DeployApi {
    pub controller: Arc<Controller>,
    /// How to reach agents (mutual TLS when the scheduler has it).
    pub security: crate::auth::Security,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Writes revision `revision` of `name` with `spec`.
pub(crate) async fn put_revision(
    store: &dyn Store,
    name: &str,
    revision: u64,
    spec: &DeploymentSpec,
    now: i64,
) -> Result<(), SchedError> {
    let record = RevisionRecord {
        revision,
        spec: Some(spec.clone()),
        created_at_ms: now,
        outcome: RolloutPhase::Progressing as i32,
        message: String::new(),
    };
    store
        .put(
            &revision_key(name, revision),
            records::encode(&record),
            Expect::Any,
        )
        .await?;
    Ok(())
}

/// Ends a rollout waiting for approval: the stable revision stays (or nothing runs).
pub(crate) async fn reject_record(
    controller: &Controller,
    name: &str,
    rec: &mut DeploymentRecord,
    why: &str,
) -> Result<(), SchedError> {
    let rejected = rec.revision;
    controller
        .set_outcome(name, rejected, RolloutPhase::Rejected, why)
        .await?;
    if rec.stable_revision != 0
        && let Some(spec) = spec_of(&*controller.store, name, rec.stable_revision).await?
    {
        let replicas = rec.spec.as_ref().map_or(spec.replicas, |s| s.replicas);
        let mut spec = spec;
        spec.replicas = replicas;
        rec.spec = Some(spec);
        rec.revision = rec.stable_revision;
        rec.phase = RolloutPhase::Complete as i32;
    } else {
        rec.phase = RolloutPhase::Rejected as i32;
    }
    rec.message = format!("revision {rejected} rejected: {why}");
    rec.awaiting_since_ms = 0;
    Ok(())
}

async fn spec_of(
    store: &dyn Store,
    name: &str,
    revision: u64,
) -> Result<Option<DeploymentSpec>, SchedError> {
    let key = revision_key(name, revision);
    match store.get(&key).await? {
        Some(kv) => Ok(records::decode::<RevisionRecord>(&key, &kv.value)?.spec),
        None => Ok(None),
    }
}

impl DeployApi {
    fn store(&self) -> &dyn Store {
        &*self.controller.store
    }

    async fn load(&self, name: &str) -> Result<(DeploymentRecord, u64), SchedError> {
        spec::validate_name("name", name)?;
        let key = deployment_key(name);
        let kv = self
            .store()
            .get(&key)
            .await?
            .ok_or_else(|| SchedError::NoSuchDeployment(name.to_string()))?;
        Ok((records::decode(&key, &kv.value)?, kv.mod_revision))
    }

    /// The deployment as the controller last described it (or from its record if it has not
    /// seen it yet).
    async fn describe(&self, name: &str) -> Result<Deployment, SchedError> {
        let (rec, mod_rev) = self.load(name).await?;
        match self.controller.status(name) {
            Some(d) if d.resource_version == mod_rev => Ok(d),
            _ => Ok(crate::controller::describe(
                name,
                &rec,
                mod_rev,
                &[],
                &Default::default(),
                &Default::default(),
            )),
        }
    }

    /// Starts rolling out `spec` as a new revision (waiting for approval when asked).
    async fn new_revision(
        &self,
        name: &str,
        spec: DeploymentSpec,
        existing: Option<(DeploymentRecord, u64)>,
        bypass_approval: bool,
    ) -> Result<(), SchedError> {
        let now = now_ms();
        let (mut rec, expect) = match existing {
            Some((rec, mod_rev)) => (rec, Expect::Revision(mod_rev)),
            None => (DeploymentRecord::default(), Expect::Absent),
        };
        let revision = rec.last_revision + 1;
        let manual = spec
            .rollout
            .as_ref()
            .is_some_and(|r| r.approval == Approval::Manual as i32);
        rec.last_revision = revision;
        rec.revision = revision;
        rec.rolled_back_from = 0;
        rec.progress_at_ms = now;
        rec.message.clear();
        if manual && !bypass_approval {
            rec.phase = RolloutPhase::AwaitingApproval as i32;
            rec.awaiting_since_ms = now;
            rec.message = format!("revision {revision} awaits approval");
        } else {
            rec.phase = RolloutPhase::Progressing as i32;
            rec.awaiting_since_ms = 0;
        }
        rec.spec = Some(spec.clone());
        let revision_record = RevisionRecord {
            revision,
            spec: Some(spec.clone()),
            created_at_ms: now,
            outcome: rec.phase,
            message: String::new(),
        };
        // The deployment and its revision land together, or neither does.
        let mut ops = vec![
            Op::Put {
                key: deployment_key(name),
                value: records::encode(&rec),
                expect,
            },
            Op::Put {
                key: revision_key(name, revision),
                value: records::encode(&revision_record),
                expect: Expect::Absent,
            },
        ];
        ops.extend(self.prune_history(name, &rec, &spec).await?);
        self.store().txn(ops).await.map_err(|e| match e {
            StoreError::Conflict { .. } => SchedError::Conflict {
                what: format!("applying deployment {name}"),
            },
            e => e.into(),
        })?;
        tracing::info!(deployment = %name, revision, manual, "new revision");
        Ok(())
    }

    /// Deletes revision records beyond the history limit (never the stable or current one).
    async fn prune_history(
        &self,
        name: &str,
        rec: &DeploymentRecord,
        spec: &DeploymentSpec,
    ) -> Result<Vec<Op>, SchedError> {
        let limit = spec
            .rollout
            .as_ref()
            .map_or(spec::DEFAULT_HISTORY, |r| r.history_limit)
            .max(1) as usize;
        let (kvs, _) = self.store().list(&revisions_prefix(name)).await?;
        let keep = [rec.revision, rec.stable_revision];
        let old: Vec<_> = kvs
            .iter()
            .filter_map(|kv| {
                kv.key
                    .rsplit('/')
                    .next()?
                    .parse::<u64>()
                    .ok()
                    .map(|r| (r, kv.key.clone()))
            })
            .filter(|(r, _)| !keep.contains(r))
            .collect();
        // The new revision takes one place in the history.
        let excess = (old.len() + 1).saturating_sub(limit);
        Ok(old
            .into_iter()
            .take(excess)
            .map(|(_, key)| Op::Delete {
                key,
                expect: Expect::Any,
            })
            .collect())
    }

    /// The largest allocatable any registered node offers: a request above it can never run.
    fn check_fits_somewhere(&self, spec: &DeploymentSpec) -> Result<(), SchedError> {
        let want = spec.resources.unwrap_or_default();
        let nodes: Vec<(String, Resources)> = self.controller.cluster.with_nodes(|nodes| {
            nodes
                .values()
                .map(|n| {
                    (
                        n.record.name.clone(),
                        n.capacity
                            .allocatable
                            .or(n.record.allocatable)
                            .unwrap_or_default(),
                    )
                })
                .collect()
        });
        if nodes.is_empty() {
            return Ok(());
        }
        let fits = nodes
            .iter()
            .any(|(_, a)| a.cpu_millis >= want.cpu_millis && a.memory_bytes >= want.memory_bytes);
        if fits {
            Ok(())
        } else {
            Err(SchedError::FailedPrecondition(format!(
                "spec.resources: {}m cpu and {} bytes of memory fit on no node (largest allocatable: {})",
                want.cpu_millis,
                want.memory_bytes,
                nodes
                    .iter()
                    .map(|(n, a)| format!("{n} {}m/{}B", a.cpu_millis, a.memory_bytes))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

#[tonic::async_trait]
impl DeploymentService for DeployApi {
    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| SchedError::invalid("spec", "missing"))?;
        let spec = spec::with_defaults(spec);
        spec::validate(&spec)?;
        self.check_fits_somewhere(&spec)?;
        let name = spec.name.clone();
        let existing = match self.load(&name).await {
            Ok(found) => Some(found),
            Err(SchedError::NoSuchDeployment(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let changed = existing
            .as_ref()
            .is_none_or(|(rec, _)| rec.spec.as_ref() != Some(&spec));
        if changed {
            self.new_revision(&name, spec, existing, false).await?;
        }
        let deployment = self.describe(&name).await?;
        Ok(Response::new(ApplyResponse {
            deployment: Some(deployment),
            changed,
        }))
    }

    async fn get(
        &self,
        request: Request<GetDeploymentRequest>,
    ) -> Result<Response<Deployment>, Status> {
        Ok(Response::new(
            self.describe(&request.into_inner().name).await?,
        ))
    }

    async fn list(
        &self,
        _request: Request<ListDeploymentsRequest>,
    ) -> Result<Response<ListDeploymentsResponse>, Status> {
        let (kvs, _) = self
            .store()
            .list(DEPLOYMENTS)
            .await
            .map_err(SchedError::from)?;
        let mut deployments = Vec::new();
        for kv in kvs {
            let name = kv.key.trim_start_matches(DEPLOYMENTS).to_string();
            deployments.push(self.describe(&name).await?);
        }
        Ok(Response::new(ListDeploymentsResponse { deployments }))
    }

    async fn delete(
        &self,
        request: Request<DeleteDeploymentRequest>,
    ) -> Result<Response<DeleteDeploymentResponse>, Status> {
        let name = request.into_inner().name;
        let (_, mod_rev) = self.load(&name).await?;
        let (revisions, _) = self
            .store()
            .list(&revisions_prefix(&name))
            .await
            .map_err(SchedError::from)?;
        let mut ops = vec![Op::Delete {
            key: deployment_key(&name),
            expect: Expect::Revision(mod_rev),
        }];
        ops.extend(revisions.into_iter().map(|kv| Op::Delete {
            key: kv.key,
            expect: Expect::Any,
        }));
        self.store().txn(ops).await.map_err(SchedError::from)?;
        tracing::info!(deployment = %name, "deleted");
        Ok(Response::new(DeleteDeploymentResponse {}))
    }

    async fn scale(&self, request: Request<ScaleRequest>) -> Result<Response<Deployment>, Status> {
        let req = request.into_inner();
        if req.replicas > spec::MAX_REPLICAS {
            return Err(SchedError::invalid(
                "replicas",
                format!(
                    "{} is above the limit of {}",
                    req.replicas,
                    spec::MAX_REPLICAS
                ),
            )
            .into());
        }
        let (mut rec, mod_rev) = self.load(&req.name).await?;
        if let Some(s) = rec.spec.as_mut() {
            s.replicas = req.replicas;
        }
        self.controller.save(&req.name, &rec, mod_rev).await?;
        Ok(Response::new(self.describe(&req.name).await?))
    }

    async fn approve(
        &self,
        request: Request<ApproveRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let name = request.into_inner().name;
        let (mut rec, mod_rev) = self.load(&name).await?;
        if rec.phase != RolloutPhase::AwaitingApproval as i32 {
            return Err(SchedError::FailedPrecondition(format!(
                "deployment {name} has no rollout awaiting approval (revision {} is {})",
                rec.revision,
                phase_name(rec.phase)
            ))
            .into());
        }
        rec.phase = RolloutPhase::Progressing as i32;
        rec.progress_at_ms = now_ms();
        rec.awaiting_since_ms = 0;
        rec.message = format!("revision {} approved", rec.revision);
        self.controller.save(&name, &rec, mod_rev).await?;
        self.controller
            .set_outcome(&name, rec.revision, RolloutPhase::Progressing, "approved")
            .await?;
        Ok(Response::new(self.describe(&name).await?))
    }

    async fn reject(
        &self,
        request: Request<RejectRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let name = request.into_inner().name;
        let (mut rec, mod_rev) = self.load(&name).await?;
        if rec.phase != RolloutPhase::AwaitingApproval as i32 {
            return Err(SchedError::FailedPrecondition(format!(
                "deployment {name} has no rollout awaiting approval"
            ))
            .into());
        }
        reject_record(&self.controller, &name, &mut rec, "rejected").await?;
        self.controller.save(&name, &rec, mod_rev).await?;
        Ok(Response::new(self.describe(&name).await?))
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<Deployment>, Status> {
        let req = request.into_inner();
        let (rec, mod_rev) = self.load(&req.name).await?;
        let to = if req.to_revision != 0 {
            req.to_revision
        } else {
            // The newest revision before the current one that still has a record.
            let (kvs, _) = self
                .store()
                .list(&revisions_prefix(&req.name))
                .await
                .map_err(SchedError::from)?;
            kvs.iter()
                .filter_map(|kv| kv.key.rsplit('/').next()?.parse::<u64>().ok())
                .filter(|r| *r < rec.revision)
                .max()
                .ok_or_else(|| {
                    SchedError::FailedPrecondition(format!(
                        "deployment {} has no earlier revision",
                        req.name
                    ))
                })?
        };
        let mut spec =
            spec_of(self.store(), &req.name, to)
                .await?
                .ok_or_else(|| SchedError::NotFound {
                    what: format!("revision {to} of deployment {}", req.name),
                })?;
        spec.replicas = rec.spec.as_ref().map_or(spec.replicas, |s| s.replicas);
        // A rollback is an emergency measure: it does not wait for approval.
        self.new_revision(&req.name, spec, Some((rec, mod_rev)), true)
            .await?;
        Ok(Response::new(self.describe(&req.name).await?))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let name = request.into_inner().name;
        self.load(&name).await?;
        let (kvs, _) = self
            .store()
            .list(&revisions_prefix(&name))
            .await
            .map_err(SchedError::from)?;
        let mut revisions = Vec::new();
        for kv in kvs {
            revisions.push(records::decode::<RevisionRecord>(&kv.key, &kv.value)?);
        }
        Ok(Response::new(HistoryResponse { revisions }))
    }

    type WatchStream = BoxStream<RolloutEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let mut updates = self.controller.events.subscribe();
        let first = self.describe(&req.name).await?;
        let watched = first.revision;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let api = self.clone();
        tokio::spawn(async move {
            let mut current = Some(first);
            loop {
                if let Some(d) = current.take() {
                    let event = event_for(&d, watched, req.stop_at_approval);
                    let last = event.r#final;
                    if tx.send(Ok(event)).await.is_err() || last {
                        return;
                    }
                }
                match updates.recv().await {
                    Ok(d) if d.spec.as_ref().is_some_and(|s| s.name == req.name) => {
                        current = Some(d)
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        current = api.describe(&req.name).await.ok();
                    }
                    Err(_) => return,
                }
                if current.is_none() && api.load(&req.name).await.is_err() {
                    let _ = tx
                        .send(Err(Status::not_found(format!(
                            "deployment {} was deleted",
                            req.name
                        ))))
                        .await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_nodes(
        &self,
        _request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let cluster = &self.controller.cluster;
        let nodes = cluster.with_nodes(|nodes| {
            nodes
                .values()
                .map(|n| NodeInfo {
                    name: n.record.name.clone(),
                    labels: n.record.labels.clone(),
                    capacity: Some(n.capacity),
                    ready: cluster.is_ready(n),
                    pod_cidr: n.record.pod_cidr.clone(),
                    address: n.record.address.clone(),
                    agent_endpoint: n.record.agent_endpoint.clone(),
                    last_heartbeat_ms: now_ms() - n.last_heartbeat.elapsed().as_millis() as i64,
                    containers: n.containers.len() as u32,
                })
                .collect()
        });
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn list_containers(
        &self,
        request: Request<ListClusterContainersRequest>,
    ) -> Result<Response<ListClusterContainersResponse>, Status> {
        let only = request.into_inner().deployment;
        let mut containers = self.controller.cluster.with_nodes(|nodes| {
            nodes
                .values()
                .flat_map(|n| {
                    n.containers.values().map(|s| ClusterContainer {
                        node: n.record.name.clone(),
                        status: Some(s.clone()),
                    })
                })
                .filter(|c| {
                    only.is_empty() || c.status.as_ref().is_some_and(|s| s.deployment == only)
                })
                .collect::<Vec<_>>()
        });
        containers.sort_by(|a, b| {
            let id = |c: &ClusterContainer| c.status.as_ref().map(|s| s.container_id.clone());
            id(a).cmp(&id(b))
        });
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

impl DeployApi {
    /// The container `target` names (a container id, or a deployment: one of its replicas of
    /// the current revision, running ones and ready ones first) and a client of its node's agent.
    async fn agent_of(
        &self,
        target: &str,
    ) -> Result<(String, AgentServiceClient<tonic::transport::Channel>), SchedError> {
        // A deployment's name means one of its replicas of the current revision, running
        // ones (ready first) before others.
        let wanted = self.controller.status(target).and_then(|d| {
            let mut current: Vec<&ReplicaStatus> = d
                .replica_status
                .iter()
                .filter(|r| r.revision == d.revision && !r.node.is_empty())
                .collect();
            current.sort_by_key(|r| {
                (
                    !r.ready,
                    r.state != ContainerState::Running as i32,
                    r.container_id.clone(),
                )
            });
            current.first().map(|r| r.container_id.clone())
        });
        let wanted = wanted.unwrap_or_else(|| target.to_string());
        // A container id, or (no current replica known) any container of the deployment.
        let found = self.controller.cluster.with_nodes(|nodes| {
            let mut candidates: Vec<(String, String, String)> = nodes
                .values()
                .flat_map(|n| {
                    n.containers.values().map(|s| {
                        (
                            s.container_id.clone(),
                            s.deployment.clone(),
                            n.record.agent_endpoint.clone(),
                        )
                    })
                })
                .filter(|(id, dep, _)| *id == wanted || *dep == target)
                .collect();
            // The exact id first, then by id.
            candidates.sort_by_key(|(id, _, _)| (*id != wanted, id.clone()));
            candidates.into_iter().next()
        });
        let Some((id, _, endpoint)) = found else {
            return Err(SchedError::NotFound {
                what: format!("container or deployment {target}"),
            });
        };
        let client = self.security.connect_agent(&endpoint).await?;
        Ok((id, client))
    }
}

fn phase_name(phase: i32) -> String {
    RolloutPhase::try_from(phase)
        .map(|p| {
            p.as_str_name()
                .trim_start_matches("ROLLOUT_PHASE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// The event for a watcher of revision `watched`, final when its rollout is over.
fn event_for(d: &Deployment, watched: u64, stop_at_approval: bool) -> RolloutEvent {
    let mut phase = RolloutPhase::try_from(d.phase).unwrap_or(RolloutPhase::Unspecified);
    let mut message = d.message.clone();
    if d.revision != watched {
        // The watched revision was replaced: rolled back after failing, or superseded.
        if d.message.contains(&format!("revision {watched} failed"))
            || d.message
                .contains(&format!("rolled back from revision {watched}"))
        {
            phase = RolloutPhase::RolledBack;
        } else if d.message.contains(&format!("revision {watched} rejected")) {
            phase = RolloutPhase::Rejected;
        } else {
            message = format!(
                "revision {watched} was superseded by revision {}",
                d.revision
            );
            phase = RolloutPhase::Failed;
        }
    }
    let r#final = match phase {
        RolloutPhase::Complete
        | RolloutPhase::Failed
        | RolloutPhase::RolledBack
        | RolloutPhase::Rejected => true,
        RolloutPhase::AwaitingApproval => stop_at_approval,
        _ => false,
    };
    RolloutEvent {
        deployment: d.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
        revision: d.revision,
        phase: phase as i32,
        replicas: d.spec.as_ref().map_or(0, |s| s.replicas),
        ready_replicas: d.ready_replicas,
        updated_replicas: d.updated_replicas,
        message,
        at_ms: now_ms(),
        r#final,
    }
}
