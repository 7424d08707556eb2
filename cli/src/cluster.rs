//! Talking to the scheduler's DeploymentService (`--scheduler ADDR`): the address flag, the
//! client, words for phases and states, and the rollout progress view that `deploy --wait`,
//! `approve --wait` and `rollback --wait` share.

pub(crate) mod spec;

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::deployment_service_client::DeploymentServiceClient;
use berth_proto::v1::release_service_client::ReleaseServiceClient;
use berth_proto::v1::{
    ContainerState, GetDeploymentRequest, HistoryRequest, RolloutEvent, RolloutPhase, WatchRequest,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::exit;
use crate::output::{OutputFormat, print_json};

/// The environment cluster commands act in (`--env`, BERTH_ENV): set by main, and by
/// `promote --wait` to follow the target environment's rollout.
static ENVIRONMENT: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Sets the environment every cluster request names (see [`environment`]).
pub(crate) fn set_environment(env: &str) {
    *ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(env.to_string());
}

/// The top-level `--env` when it was given on the command line: the filter of commands that
/// otherwise show every environment (`audit`, `events`), so it works before them too.
static ENVIRONMENT_FILTER: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Records a top-level `--env` given on the command line (see [`environment_filter`]).
pub(crate) fn set_environment_filter(env: &str) {
    *ENVIRONMENT_FILTER.lock().unwrap_or_else(|e| e.into_inner()) = Some(env.to_string());
}

/// The environment a listing over all environments is narrowed to: its own `--env` first, else
/// a top-level `--env` from the command line (BERTH_ENV alone does not narrow it).
pub(crate) fn environment_filter(own: Option<&str>) -> Option<String> {
    own.map(str::to_string).or_else(|| {
        ENVIRONMENT_FILTER
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    })
}

/// The environment every cluster request names: `--env`, BERTH_ENV, or "default".
pub(crate) fn environment() -> String {
    ENVIRONMENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| DEFAULT_ENVIRONMENT.into())
}

/// " --env ENV" for a command line to show, or nothing in the default environment.
fn env_flag() -> String {
    match environment().as_str() {
        DEFAULT_ENVIRONMENT => String::new(),
        env => format!(" --env {env}"),
    }
}

/// The environment that always exists.
pub(crate) const DEFAULT_ENVIRONMENT: &str = "default";

/// Where the scheduler listens unless `--scheduler` or BERTH_SCHEDULER say otherwise.
pub(crate) const DEFAULT_SCHEDULER: &str = "http://127.0.0.1:7700";

/// The cluster flags: global, so they go before or after the subcommand (`berth --scheduler
/// ADDR nodes` and `berth nodes --scheduler ADDR`), as with kubectl and podman.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ClusterFlags {
    /// The scheduler's DeploymentService: HOST:PORT, http://HOST:PORT or https://HOST:PORT
    /// (default http://127.0.0.1:7700); several comma-separated for schedulers sharing an
    /// etcd: the first that answers is used. For ps, logs and explain: cluster-wide through
    /// it instead of this machine's local containers.
    #[arg(long, global = true, env = "BERTH_SCHEDULER", value_name = "ADDR")]
    pub scheduler: Option<String>,
    /// table for people, json for programs (image inspect: json unless told; deploy --wait:
    /// the final rollout event).
    #[arg(long, short, global = true, value_enum)]
    pub output: Option<OutputFormat>,
}

/// Waiting for a rollout: shared by deploy, approve and rollback.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WaitArgs {
    /// Follow the rollout until it completes (exit 0), fails (1), awaits approval with
    /// --stop-at-approval (3) or --timeout passes (4).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (like 90s, 5m, 1h).
    #[arg(long, default_value = "5m", value_parser = spec::parse_duration)]
    pub timeout: Duration,
    /// With --wait, stop once the rollout awaits approval (exit 3) instead of waiting
    /// through it.
    #[arg(long)]
    pub stop_at_approval: bool,
}

pub(crate) type Client = DeploymentServiceClient<crate::auth::AuthChannel>;

pub(crate) use crate::remote::url;

/// A channel to the first scheduler of `addrs` that answers: one address, or several
/// comma-separated (schedulers sharing an etcd: any of them forwards to the leader). Every
/// scheduler service's client is built on it.
pub(crate) async fn channel(addrs: &str) -> anyhow::Result<crate::auth::AuthChannel> {
    let mut failure = None;
    for addr in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match crate::auth::connect(&url(addr), "the scheduler").await {
            Ok(channel) => return Ok(channel),
            Err(e) => failure = Some(e),
        }
    }
    Err(failure.unwrap_or_else(|| anyhow::anyhow!("no scheduler address given")))
}

/// A DeploymentService client of the first scheduler of `addrs` that answers.
pub(crate) async fn connect(addrs: &str) -> anyhow::Result<Client> {
    Ok(DeploymentServiceClient::new(channel(addrs).await?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Runs one exchange with the scheduler on a fresh single-threaded runtime.
pub(crate) fn with_client<T>(
    addr: &str,
    f: impl AsyncFnOnce(Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    crate::remote::block_on(async {
        let client = connect(addr).await?;
        f(client).await
    })
}

/// A ReleaseService client (releases, promotion, the audit log) of the first scheduler of
/// `addr` that answers.
pub(crate) type ReleaseClient = ReleaseServiceClient<crate::auth::AuthChannel>;

/// Runs one exchange with the scheduler's ReleaseService on a fresh single-threaded runtime.
pub(crate) fn with_release_client<T>(
    addr: &str,
    f: impl AsyncFnOnce(ReleaseClient) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    crate::remote::block_on(async {
        let client = ReleaseServiceClient::new(channel(addr).await?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        f(client).await
    })
}

/// One line for a scheduler error: its message names the field or object.
pub(crate) fn status_error(status: tonic::Status) -> anyhow::Error {
    crate::remote::status_error(status)
}

/// "progressing", "awaiting-approval", "complete", "failed", "rolled-back", "rejected".
pub(crate) fn phase_name(phase: i32) -> String {
    RolloutPhase::try_from(phase)
        .map(|p| {
            p.as_str_name()
                .trim_start_matches("ROLLOUT_PHASE_")
                .to_ascii_lowercase()
                .replace('_', "-")
        })
        .unwrap_or_else(|_| format!("phase-{phase}"))
}

/// "pending", "running", "exited", ...
pub(crate) fn state_name(state: i32) -> String {
    ContainerState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("CONTAINER_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// A rollout event as `--output json` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct EventJson {
    pub deployment: String,
    pub revision: u64,
    pub phase: String,
    pub replicas: u32,
    pub ready_replicas: u32,
    pub updated_replicas: u32,
    pub message: String,
    pub at_ms: i64,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// After a rollback: whether the restored revision serves again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<Restored>,
}

impl From<&RolloutEvent> for EventJson {
    fn from(e: &RolloutEvent) -> Self {
        Self {
            deployment: e.deployment.clone(),
            revision: e.revision,
            phase: phase_name(e.phase),
            replicas: e.replicas,
            ready_replicas: e.ready_replicas,
            updated_replicas: e.updated_replicas,
            message: e.message.clone(),
            at_ms: e.at_ms,
            is_final: e.r#final,
            restored: None,
        }
    }
}

/// One line about a rollout's state.
pub(crate) fn event_line(e: &RolloutEvent) -> String {
    let mut line = format!(
        "{} revision {}: {}, {}/{} ready, {}/{} updated",
        e.deployment,
        e.revision,
        phase_name(e.phase),
        e.ready_replicas,
        e.replicas,
        e.updated_replicas,
        e.replicas
    );
    if !e.message.is_empty() {
        line.push_str(" - ");
        line.push_str(&e.message.replace('\n', " "));
    }
    line
}

/// Prints rollout progress: a single live line on a terminal, one line per change otherwise,
/// nothing with `--output json` (which prints only the last event).
struct ProgressView {
    bar: Option<ProgressBar>,
    plain: bool,
    last: String,
}

impl ProgressView {
    fn new(output: OutputFormat) -> Self {
        let table = output == OutputFormat::Table;
        let bar = (table && std::io::stdout().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout()).with_style(
                ProgressStyle::with_template("{spinner} {wide_msg}")
                    .expect("static template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            plain: table && bar.is_none(),
            bar,
            last: String::new(),
        }
    }

    fn show(&mut self, line: String) {
        if line == self.last {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_message(line.clone());
        } else if self.plain {
            println!("{line}");
        }
        self.last = line;
    }

    /// Clears the live line; the caller prints the outcome.
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Follows `name`'s rollout with Watch until a final event or the timeout, showing progress,
/// and returns the exit code (see [`exit`]). Final events of a revision older than
/// `min_revision` that report completion are taken for stale and skipped. A rollout that was
/// rolled back is followed on, within the same timeout, until the restored revision serves
/// again (the exit stays [`exit::FAILED`]).
pub(crate) async fn wait_rollout(
    client: &mut Client,
    name: &str,
    min_revision: u64,
    args: &WaitArgs,
    output: OutputFormat,
) -> anyhow::Result<i32> {
    let deadline = Instant::now() + args.timeout;
    let mut view = ProgressView::new(output);
    let mut last: Option<RolloutEvent> = None;
    let followed = follow_until(
        client,
        name,
        min_revision,
        args,
        &mut view,
        &mut last,
        deadline,
    )
    .await;
    view.finish();
    let Some(raw) = followed? else {
        if output == OutputFormat::Json
            && let Some(e) = &last
        {
            print_json(&EventJson::from(e))?;
        }
        eprintln!(
            "berth: timed out after {} waiting for the rollout of {name}{}",
            human_duration(args.timeout),
            last_state(last.as_ref())
        );
        return Ok(exit::TIMEOUT);
    };
    let event = settled(client, name, min_revision, raw.clone()).await;
    let line = event_line(&event);
    // Without a terminal the progress lines were printed as they came: not the last twice.
    let printed = view.plain && view.last == line;
    let phase = RolloutPhase::try_from(event.phase);
    if matches!(
        phase,
        Ok(RolloutPhase::Complete | RolloutPhase::AwaitingApproval)
    ) && output == OutputFormat::Json
    {
        print_json(&EventJson::from(&event))?;
    }
    let code = match phase {
        Ok(RolloutPhase::Complete) => {
            if output == OutputFormat::Table && !printed {
                println!("{line}");
            }
            exit::COMPLETE
        }
        Ok(RolloutPhase::AwaitingApproval) => {
            if output == OutputFormat::Table {
                println!("{line}");
                let env = env_flag();
                println!(
                    "  approve: berth approve {name}{env}    reject: berth reject {name}{env}"
                );
            }
            exit::AWAITING_APPROVAL
        }
        _ => {
            eprintln!("berth: rollout of {line}");
            let restored = if phase == Ok(RolloutPhase::RolledBack) {
                let restored =
                    wait_restored(client, name, &raw, min_revision, args, deadline).await;
                eprintln!("berth: {name}: {}", restored.message);
                Some(restored)
            } else {
                None
            };
            if output == OutputFormat::Json {
                print_json(&EventJson {
                    restored,
                    ..EventJson::from(&event)
                })?;
            }
            exit::FAILED
        }
    };
    Ok(code)
}

/// " (last: <the last event>)", or nothing before any event.
fn last_state(last: Option<&RolloutEvent>) -> String {
    last.map(|e| format!(" (last: {})", event_line(e)))
        .unwrap_or_default()
}

/// Follows Watch streams (a new one when a stream ends early or the scheduler is briefly
/// unavailable) until a final event, or None at `deadline`.
async fn follow_until(
    client: &mut Client,
    name: &str,
    min_revision: u64,
    args: &WaitArgs,
    view: &mut ProgressView,
    last: &mut Option<RolloutEvent>,
    deadline: Instant,
) -> anyhow::Result<Option<RolloutEvent>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let followed =
            tokio::time::timeout(left, follow(client, name, min_revision, args, view, last)).await;
        match followed {
            Err(_elapsed) => return Ok(None),
            Ok(Ok(Some(event))) => return Ok(Some(event)),
            // The stream ended without a final event: the scheduler restarted or dropped us.
            Ok(Ok(None)) => tokio::time::sleep(Duration::from_millis(500)).await,
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Ok(Err(status)) => return Err(status_error(status)),
        }
    }
}

/// Whether the revision a rollback restored serves again, as `--output json` adds it to the
/// final event.
#[derive(Debug, Serialize)]
pub(crate) struct Restored {
    /// The revision the rollback made (the last good spec, as a new revision).
    pub revision: u64,
    /// Its rollout completed: every replica ready.
    pub serving: bool,
    /// "rolled back to revision N, serving again", or why not.
    pub message: String,
}

/// After the rollout of `min_revision` was rolled back (`raw`: the final event Watch gave):
/// follows the restored revision until it completes, fails or `deadline` passes. Without this
/// `--wait` would return while the old version is still starting, i.e. nothing serves yet.
async fn wait_restored(
    client: &mut Client,
    name: &str,
    raw: &RolloutEvent,
    min_revision: u64,
    args: &WaitArgs,
    deadline: Instant,
) -> Restored {
    // The rolled-back event comes from the deployment's current revision, the restored one;
    // otherwise (a rollback seen from its own revision) ask for the current one.
    let revision = if raw.revision > min_revision {
        raw.revision
    } else {
        let current = client
            .get(GetDeploymentRequest {
                name: name.to_string(),
                environment: environment(),
            })
            .await;
        match current {
            Ok(d) => d.into_inner().revision,
            Err(_) => raw.revision,
        }
    };
    // Quiet: the outcome line says how it went (progress lines here would read as the failed
    // rollout's).
    let mut view = ProgressView::new(OutputFormat::Json);
    let mut last = None;
    let followed = follow_until(client, name, revision, args, &mut view, &mut last, deadline).await;
    view.finish();
    let rolled_back = format!("rolled back to revision {revision}");
    let (serving, message) = match followed {
        Ok(Some(e)) if e.revision == revision && e.phase == RolloutPhase::Complete as i32 => (
            true,
            format!(
                "{rolled_back}, serving again ({}/{} ready)",
                e.ready_replicas, e.replicas
            ),
        ),
        Ok(Some(e)) => (
            false,
            format!("{rolled_back}, not serving again: {}", event_line(&e)),
        ),
        Ok(None) => (
            false,
            format!(
                "{rolled_back}, not serving again yet: timed out after {}{}",
                human_duration(args.timeout),
                last_state(last.as_ref())
            ),
        ),
        Err(e) => (
            false,
            format!("{rolled_back}, not known to serve again: {e}"),
        ),
    };
    Restored {
        revision,
        serving,
        message,
    }
}

/// The final event, or when it is about a later revision than `min_revision` the outcome of
/// `min_revision` itself if that failed or was rejected: Watch follows whatever revision is
/// current when it starts, so a revision that failed fast and was already rolled back (as a
/// new revision) before the Watch began would otherwise be reported as the rollback's result.
async fn settled(
    client: &mut Client,
    name: &str,
    min_revision: u64,
    event: RolloutEvent,
) -> RolloutEvent {
    if min_revision == 0 || event.revision <= min_revision {
        return event;
    }
    let Ok(history) = client
        .history(HistoryRequest {
            name: name.to_string(),
            environment: environment(),
        })
        .await
    else {
        return event;
    };
    let Some(ours) = history
        .into_inner()
        .revisions
        .into_iter()
        .find(|r| r.revision == min_revision)
    else {
        return event;
    };
    let failed = [
        RolloutPhase::Failed,
        RolloutPhase::RolledBack,
        RolloutPhase::Rejected,
    ]
    .map(|p| p as i32);
    if !failed.contains(&ours.outcome) {
        return event;
    }
    let rolled_back = event.phase == RolloutPhase::RolledBack as i32
        || event
            .message
            .contains(&format!("revision {min_revision} failed"))
        || event
            .message
            .contains(&format!("rolled back from revision {min_revision}"));
    let (phase, message) = if rolled_back {
        let now = if event.phase == RolloutPhase::RolledBack as i32 {
            "progressing".to_string()
        } else {
            phase_name(event.phase)
        };
        (
            RolloutPhase::RolledBack as i32,
            format!(
                "{}; rolled back as revision {} ({now})",
                ours.message, event.revision
            ),
        )
    } else {
        (
            ours.outcome,
            format!(
                "{} (now revision {}: {})",
                ours.message,
                event.revision,
                phase_name(event.phase)
            ),
        )
    };
    RolloutEvent {
        revision: min_revision,
        phase,
        message,
        r#final: true,
        ..event
    }
}

/// One Watch stream: Some(final event), None when the stream ended early.
async fn follow(
    client: &mut Client,
    name: &str,
    min_revision: u64,
    args: &WaitArgs,
    view: &mut ProgressView,
    last: &mut Option<RolloutEvent>,
) -> Result<Option<RolloutEvent>, tonic::Status> {
    let mut stream = client
        .watch(WatchRequest {
            name: name.to_string(),
            stop_at_approval: args.stop_at_approval,
            environment: environment(),
        })
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        let stale = event.revision < min_revision && event.phase == RolloutPhase::Complete as i32;
        let mut line = event_line(&event);
        if event.phase == RolloutPhase::AwaitingApproval as i32 && !event.r#final {
            let env = env_flag();
            line.push_str(&format!(
                " (berth approve {name}{env} / berth reject {name}{env})"
            ));
        }
        view.show(line);
        *last = Some(event.clone());
        if event.r#final && !stale {
            return Ok(Some(event));
        }
    }
    Ok(None)
}

/// 90 s as "1m30s".
pub(crate) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// How long ago a Unix-milliseconds instant was: "3s", "5m", "2h", "4d" ("-" for never).
pub(crate) fn age(at_ms: i64) -> String {
    if at_ms <= 0 {
        return "-".into();
    }
    let now = berth_runtime::sys::time::now_ms();
    let secs = (now - at_ms).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use berth_proto::v1::deployment_service_server::{DeploymentService, DeploymentServiceServer};
    use berth_proto::v1::*;
    use tokio_stream::Stream;
    use tonic::{Request, Response, Status};

    use super::*;

    type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    /// A scheduler whose Watch plays back a script of events (`Err` ends the stream early).
    #[derive(Debug, Clone)]
    struct Fake {
        /// One script per Watch call, in order; the last one repeats.
        scripts: std::sync::Arc<std::sync::Mutex<Vec<Vec<RolloutEvent>>>>,
    }

    fn nope<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    #[tonic::async_trait]
    impl DeploymentService for Fake {
        async fn apply(&self, _: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
            nope()
        }
        async fn get(
            &self,
            r: Request<GetDeploymentRequest>,
        ) -> Result<Response<Deployment>, Status> {
            Err(Status::not_found(format!(
                "deployment {} not found",
                r.into_inner().name
            )))
        }
        async fn list(
            &self,
            _: Request<ListDeploymentsRequest>,
        ) -> Result<Response<ListDeploymentsResponse>, Status> {
            nope()
        }
        async fn delete(
            &self,
            _: Request<DeleteDeploymentRequest>,
        ) -> Result<Response<DeleteDeploymentResponse>, Status> {
            nope()
        }
        async fn scale(&self, _: Request<ScaleRequest>) -> Result<Response<Deployment>, Status> {
            nope()
        }
        async fn approve(
            &self,
            _: Request<ApproveRequest>,
        ) -> Result<Response<Deployment>, Status> {
            nope()
        }
        async fn reject(&self, _: Request<RejectRequest>) -> Result<Response<Deployment>, Status> {
            nope()
        }
        async fn rollback(
            &self,
            _: Request<RollbackRequest>,
        ) -> Result<Response<Deployment>, Status> {
            nope()
        }
        async fn history(
            &self,
            _: Request<HistoryRequest>,
        ) -> Result<Response<HistoryResponse>, Status> {
            nope()
        }
        type WatchStream = Stream_<RolloutEvent>;
        async fn watch(
            &self,
            _: Request<WatchRequest>,
        ) -> Result<Response<Self::WatchStream>, Status> {
            let script = {
                let mut scripts = self.scripts.lock().unwrap();
                if scripts.len() > 1 {
                    scripts.remove(0)
                } else {
                    scripts[0].clone()
                }
            };
            // Ends after a final event, as the scheduler's does; otherwise stays open.
            let ends = script.iter().any(|e| e.r#final);
            let events = tokio_stream::iter(script.into_iter().map(Ok));
            let stream: Self::WatchStream = if ends {
                Box::pin(events)
            } else {
                Box::pin(tokio_stream::StreamExt::chain(
                    events,
                    tokio_stream::pending(),
                ))
            };
            Ok(Response::new(stream))
        }
        async fn list_nodes(
            &self,
            _: Request<ListNodesRequest>,
        ) -> Result<Response<ListNodesResponse>, Status> {
            nope()
        }
        async fn list_services(
            &self,
            _: Request<ListServicesRequest>,
        ) -> Result<Response<ListServicesResponse>, Status> {
            nope()
        }
        async fn list_volumes(
            &self,
            _: Request<berth_proto::v1::ListVolumesRequest>,
        ) -> Result<Response<berth_proto::v1::ListVolumesResponse>, Status> {
            nope()
        }
        async fn list_containers(
            &self,
            _: Request<ListClusterContainersRequest>,
        ) -> Result<Response<ListClusterContainersResponse>, Status> {
            nope()
        }
        type LogsStream = Stream_<LogChunk>;
        async fn logs(
            &self,
            _: Request<ClusterLogsRequest>,
        ) -> Result<Response<Self::LogsStream>, Status> {
            nope()
        }
        async fn explain(
            &self,
            _: Request<ClusterExplainRequest>,
        ) -> Result<Response<ExplainResponse>, Status> {
            nope()
        }
    }

    fn event(revision: u64, phase: RolloutPhase, is_final: bool) -> RolloutEvent {
        RolloutEvent {
            deployment: "hello".into(),
            revision,
            phase: phase as i32,
            replicas: 2,
            ready_replicas: 1,
            updated_replicas: 1,
            message: "because".into(),
            at_ms: 1,
            r#final: is_final,
        }
    }

    /// Serves `scripts` from a [`Fake`] on a loopback port and runs `f` with a client of it.
    fn with_fake<T>(
        scripts: Vec<Vec<RolloutEvent>>,
        f: impl AsyncFnOnce(Client) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let fake = Fake {
            scripts: std::sync::Arc::new(std::sync::Mutex::new(scripts)),
        };
        crate::remote::block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(DeploymentServiceServer::new(fake))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            f(connect(&addr.to_string()).await?).await
        })
    }

    /// Serves `scripts` and returns what wait_rollout makes of them.
    fn wait_with(scripts: Vec<Vec<RolloutEvent>>, min_revision: u64, timeout: Duration) -> i32 {
        with_fake(scripts, async |mut client| {
            let args = WaitArgs {
                wait: true,
                timeout,
                stop_at_approval: true,
            };
            wait_rollout(
                &mut client,
                "hello",
                min_revision,
                &args,
                OutputFormat::Json,
            )
            .await
        })
        .unwrap()
    }

    #[test]
    fn wait_exit_codes() {
        use RolloutPhase::*;
        let long = Duration::from_secs(10);
        let progress = event(2, Progressing, false);
        assert_eq!(
            wait_with(
                vec![vec![progress.clone(), event(2, Complete, true)]],
                2,
                long
            ),
            exit::COMPLETE
        );
        assert_eq!(
            wait_with(vec![vec![event(2, AwaitingApproval, true)]], 2, long),
            exit::AWAITING_APPROVAL
        );
        for phase in [Failed, RolledBack, Rejected] {
            assert_eq!(
                wait_with(vec![vec![progress.clone(), event(3, phase, true)]], 2, long),
                exit::FAILED
            );
        }
        assert_eq!(
            wait_with(vec![vec![progress.clone()]], 2, Duration::from_millis(300)),
            exit::TIMEOUT
        );
        // A stale completion of the revision before is skipped; an early end of the stream
        // is followed by a new Watch.
        assert_eq!(
            wait_with(
                vec![
                    vec![event(1, Complete, true)],
                    vec![event(2, Complete, true)]
                ],
                2,
                long
            ),
            exit::COMPLETE
        );
        // A rolled-back final event counts, whatever its revision.
        assert_eq!(
            wait_with(vec![vec![event(1, RolledBack, true)]], 2, long),
            exit::FAILED
        );
        // After a rollback the wait goes on until the restored revision serves, or times
        // out: the exit stays 1 either way.
        assert_eq!(
            wait_with(
                vec![vec![event(3, RolledBack, true)], vec![progress.clone()]],
                2,
                Duration::from_millis(500)
            ),
            exit::FAILED
        );
    }

    /// Runs wait_restored against `scripts` after the rollback event `raw` of revision 2.
    fn restored_with(
        scripts: Vec<Vec<RolloutEvent>>,
        raw: RolloutEvent,
        timeout: Duration,
    ) -> Restored {
        with_fake(scripts, async |mut client| {
            let args = WaitArgs {
                wait: true,
                timeout,
                stop_at_approval: false,
            };
            let deadline = Instant::now() + timeout;
            Ok(wait_restored(&mut client, "hello", &raw, 2, &args, deadline).await)
        })
        .unwrap()
    }

    #[test]
    fn a_rollback_is_followed_until_the_restored_revision_serves() {
        use RolloutPhase::*;
        let long = Duration::from_secs(10);
        let mut ready = event(3, Complete, true);
        ready.ready_replicas = 2;
        let restored = restored_with(
            vec![vec![event(3, Progressing, false), ready]],
            event(3, RolledBack, true),
            long,
        );
        assert!(restored.serving, "{restored:?}");
        assert_eq!(restored.revision, 3);
        assert_eq!(
            restored.message,
            "rolled back to revision 3, serving again (2/2 ready)"
        );
        // A stale completion of an older revision does not count as serving.
        let restored = restored_with(
            vec![
                vec![event(1, Complete, true)],
                vec![event(3, Progressing, false)],
            ],
            event(3, RolledBack, true),
            Duration::from_millis(500),
        );
        assert!(!restored.serving, "{restored:?}");
        assert!(
            restored
                .message
                .starts_with("rolled back to revision 3, not serving again yet: timed out"),
            "{restored:?}"
        );
        let restored = restored_with(
            vec![vec![event(3, Failed, true)]],
            event(3, RolledBack, true),
            long,
        );
        assert!(!restored.serving, "{restored:?}");
        assert!(
            restored.message.starts_with(
                "rolled back to revision 3, not serving again: hello revision 3: failed"
            ),
            "{restored:?}"
        );
    }

    #[test]
    fn scheduler_errors_are_one_line() {
        let err = with_fake(vec![vec![]], async |mut client| {
            client
                .get(GetDeploymentRequest {
                    name: "nope".into(),
                    ..Default::default()
                })
                .await
                .map_err(status_error)
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "deployment nope not found");
    }

    #[test]
    fn words() {
        assert_eq!(
            phase_name(RolloutPhase::AwaitingApproval as i32),
            "awaiting-approval"
        );
        assert_eq!(phase_name(RolloutPhase::RolledBack as i32), "rolled-back");
        assert_eq!(state_name(ContainerState::Running as i32), "running");
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(url("127.0.0.1:7700"), "http://127.0.0.1:7700");
    }
}
