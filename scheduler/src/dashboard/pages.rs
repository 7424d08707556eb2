//! The pages: the cluster, deployments per environment, one deployment, releases and a
//! container's log. Each reads through the gRPC handlers (or the domain they call) and
//! renders a template; none changes anything.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use berth_proto::v1::deployment_service_server::DeploymentService;
use berth_proto::v1::release_service_server::ReleaseService;
use berth_proto::v1::*;
use futures::StreamExt as _;

use super::Dashboard;
use super::session::Visitor;
use super::view::{self, Layout, PageError, render};
use crate::clock::now_ms;
use crate::environments::key;

type Page = Result<Html<String>, PageError>;

/// A node's row: readiness, capacity against allocation, containers and heartbeat age.
#[derive(Debug)]
struct NodeRow {
    name: String,
    ready: bool,
    address: String,
    cpu: String,
    cpu_pct: u64,
    memory: String,
    memory_pct: u64,
    heartbeat: String,
    containers: Vec<ContainerRow>,
}

#[derive(Debug)]
struct ContainerRow {
    id: String,
    deployment: String,
    state: &'static str,
    ready: bool,
}

#[derive(Template)]
#[template(path = "cluster.html")]
struct ClusterPage {
    layout: Layout,
    nodes: Vec<NodeRow>,
}

pub(crate) async fn cluster(State(d): State<Dashboard>, v: Visitor) -> Page {
    let now = now_ms();
    let cluster = &d.deploy.controller.cluster;
    let containers = cluster.containers("");
    let nodes = cluster
        .node_infos(now)
        .into_iter()
        .map(|n| {
            let cap = n.capacity.unwrap_or_default();
            let (total, used) = (
                cap.allocatable.unwrap_or_default(),
                cap.allocated.unwrap_or_default(),
            );
            NodeRow {
                ready: n.ready,
                address: n.address,
                cpu: format!("{}m of {}m", used.cpu_millis, total.cpu_millis),
                cpu_pct: view::percent(used.cpu_millis, total.cpu_millis),
                memory: format!(
                    "{} of {}",
                    view::bytes(used.memory_bytes),
                    view::bytes(total.memory_bytes)
                ),
                memory_pct: view::percent(used.memory_bytes, total.memory_bytes),
                heartbeat: view::ago(n.last_heartbeat_ms, now),
                containers: containers
                    .iter()
                    .filter(|c| c.node == n.name)
                    .filter_map(|c| c.status.as_ref())
                    .map(|s| ContainerRow {
                        id: s.container_id.clone(),
                        deployment: key::describe(&s.deployment),
                        state: view::state(s.state),
                        ready: s.ready,
                    })
                    .collect(),
                name: n.name,
            }
        })
        .collect();
    render(&ClusterPage {
        layout: Layout::new(&d, &v, "cluster"),
        nodes,
    })
}

/// A deployment's row: replicas ready and updated, phase, and the rollout's progress.
#[derive(Debug)]
struct DeploymentRow {
    name: String,
    url: String,
    release: String,
    replicas: u32,
    ready: u32,
    updated: u32,
    phase: &'static str,
    message: String,
}

#[derive(Template)]
#[template(path = "deployments.html")]
struct DeploymentsPage {
    layout: Layout,
    environments: Vec<String>,
    env: String,
    rows: Vec<DeploymentRow>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct EnvQuery {
    env: Option<String>,
}

pub(crate) async fn deployments(
    State(d): State<Dashboard>,
    v: Visitor,
    Query(q): Query<EnvQuery>,
) -> Page {
    let env = key::normalize(q.env.as_deref().unwrap_or_default()).to_string();
    let listed = d
        .deploy
        .list(v.request(ListDeploymentsRequest {
            environment: env.clone(),
            all_environments: false,
        }))
        .await?
        .into_inner();
    let environments = d
        .environments
        .list()
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect();
    let rows = listed
        .deployments
        .into_iter()
        .map(|dep| {
            let name = dep
                .spec
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            DeploymentRow {
                url: deployment_url(&env, &name),
                name,
                release: dep.release,
                replicas: dep.replicas,
                ready: dep.ready_replicas,
                updated: dep.updated_replicas,
                phase: view::phase(dep.phase),
                message: dep.message,
            }
        })
        .collect();
    render(&DeploymentsPage {
        layout: Layout::new(&d, &v, "deployments"),
        environments,
        env,
        rows,
    })
}

pub(crate) fn deployment_url(env: &str, name: &str) -> String {
    format!("/deployments/{}/{name}", key::normalize(env))
}

#[derive(Debug)]
struct ReplicaRow {
    id: String,
    node: String,
    state: &'static str,
    ready: bool,
    ip: String,
    restarts: u32,
    revision: u64,
}

#[derive(Debug)]
struct RevisionRow {
    revision: u64,
    release: String,
    created: String,
    outcome: &'static str,
    message: String,
}

/// An event of the log: a container's state, a rollout step, an approval, an audit entry.
#[derive(Debug)]
struct EventRow {
    revision: u64,
    when: String,
    kind: &'static str,
    message: String,
}

#[derive(Debug)]
struct AuditRow {
    when: String,
    who: String,
    action: String,
    outcome: String,
    detail: String,
}

/// How many of a deployment's newest events and audit entries its page shows.
const EVENTS_SHOWN: usize = 50;
const AUDIT_SHOWN: u32 = 20;

#[derive(Template)]
#[template(path = "deployment.html")]
struct DeploymentPage {
    layout: Layout,
    env: String,
    name: String,
    url: String,
    image: String,
    release: String,
    revision: u64,
    stable_revision: u64,
    replicas: u32,
    ready: u32,
    updated: u32,
    phase: &'static str,
    message: String,
    awaiting: bool,
    replica_rows: Vec<ReplicaRow>,
    history: Vec<RevisionRow>,
    events: Vec<EventRow>,
    audit: Vec<AuditRow>,
}

pub(crate) async fn deployment(
    State(d): State<Dashboard>,
    v: Visitor,
    Path((env, name)): Path<(String, String)>,
) -> Page {
    let dep = d
        .deploy
        .get(v.request(GetDeploymentRequest {
            name: name.clone(),
            environment: env.clone(),
        }))
        .await?
        .into_inner();
    let history = d
        .deploy
        .history(v.request(HistoryRequest {
            name: name.clone(),
            environment: env.clone(),
        }))
        .await?
        .into_inner();
    let now = now_ms();
    let audit = audit_rows(&d, &v, &env, &name, now).await?;
    let events = d
        .events
        .of_deployment(&env, &name, EVENTS_SHOWN)
        .await?
        .into_iter()
        .map(|e| EventRow {
            revision: e.revision,
            when: view::ago(e.at_ms, now),
            kind: view::event_kind(e.kind),
            message: e.message,
        })
        .collect();
    render(&DeploymentPage {
        layout: Layout::new(&d, &v, "deployments"),
        url: deployment_url(&env, &name),
        image: dep
            .spec
            .as_ref()
            .map(|s| s.image.clone())
            .unwrap_or_default(),
        release: dep.release,
        revision: dep.revision,
        stable_revision: dep.stable_revision,
        replicas: dep.replicas,
        ready: dep.ready_replicas,
        updated: dep.updated_replicas,
        phase: view::phase(dep.phase),
        awaiting: dep.phase == RolloutPhase::AwaitingApproval as i32,
        message: dep.message,
        replica_rows: dep.replica_status.into_iter().map(replica_row).collect(),
        history: history
            .revisions
            .into_iter()
            .rev()
            .map(|r| RevisionRow {
                revision: r.revision,
                release: r.release,
                created: view::ago(r.created_at_ms, now),
                outcome: view::phase(r.outcome),
                message: r.message,
            })
            .collect(),
        events,
        audit,
        env: key::normalize(&env).to_string(),
        name,
    })
}

/// The deployment's newest audit entries, newest first.
async fn audit_rows(
    d: &Dashboard,
    v: &Visitor,
    env: &str,
    name: &str,
    now: i64,
) -> Result<Vec<AuditRow>, PageError> {
    let audit = d
        .releases
        .list_audit(v.request(ListAuditRequest {
            environment: env.to_string(),
            app: name.to_string(),
            limit: AUDIT_SHOWN,
            after_seq: 0,
        }))
        .await?
        .into_inner();
    Ok(audit
        .entries
        .into_iter()
        .rev()
        .map(|e| AuditRow {
            when: view::ago(e.at_ms, now),
            who: e.who,
            action: e.action,
            outcome: e.outcome,
            detail: e.detail,
        })
        .collect())
}

fn replica_row(r: ReplicaStatus) -> ReplicaRow {
    ReplicaRow {
        id: r.container_id,
        node: r.node,
        state: view::state(r.state),
        ready: r.ready,
        ip: r.ip,
        restarts: r.restart_count,
        revision: r.revision,
    }
}

#[derive(Debug)]
struct ReleaseRow {
    app: String,
    environment: String,
    url: String,
    release: String,
    revision: u64,
    phase: &'static str,
    ready: String,
    pending: String,
}

#[derive(Template)]
#[template(path = "releases.html")]
struct ReleasesPage {
    layout: Layout,
    rows: Vec<ReleaseRow>,
}

pub(crate) async fn releases(State(d): State<Dashboard>, v: Visitor) -> Page {
    let listed = d
        .releases
        .list_releases(v.request(ListReleasesRequest { app: String::new() }))
        .await?
        .into_inner();
    let rows = listed
        .apps
        .into_iter()
        .flat_map(|app| {
            app.environments.into_iter().map(move |s| ReleaseRow {
                url: deployment_url(&s.environment, &app.app),
                app: app.app.clone(),
                environment: key::normalize(&s.environment).to_string(),
                release: s.release,
                revision: s.revision,
                phase: view::phase(s.phase),
                ready: format!("{}/{}", s.ready_replicas, s.replicas),
                pending: s.pending_release,
            })
        })
        .collect();
    render(&ReleasesPage {
        layout: Layout::new(&d, &v, "releases"),
        rows,
    })
}

#[derive(Template)]
#[template(path = "log.html")]
struct LogPage {
    layout: Layout,
    id: String,
    text: String,
}

/// How many of a log's last lines a page shows.
pub(crate) const LOG_TAIL: u32 = 200;

/// The last lines a container's log holds, for reading without JavaScript; with it, the page
/// shows the same tail from `/containers/ID/log/live` and follows it there.
pub(crate) async fn log(State(d): State<Dashboard>, v: Visitor, Path(id): Path<String>) -> Page {
    let mut stream = d
        .deploy
        .logs(v.request(ClusterLogsRequest {
            target: id.clone(),
            follow: false,
            tail_lines: LOG_TAIL,
            environment: String::new(),
        }))
        .await?
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk?.data);
    }
    let mut layout = Layout::new(&d, &v, "cluster");
    layout.live = format!("/containers/{id}/log/live");
    render(&LogPage {
        layout,
        text: String::from_utf8_lossy(&data).into_owned(),
        id,
    })
}

pub(crate) async fn not_found() -> PageError {
    PageError::new(StatusCode::NOT_FOUND, "no such page")
}
