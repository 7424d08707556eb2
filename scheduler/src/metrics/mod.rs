//! The scheduler's Prometheus metrics on `--metrics-listen`: deployments in kube-state-metrics'
//! shapes, nodes as the agents report them, and the control plane (placement and store write
//! latency, agent sessions, heartbeat age, leadership). Leader and standby both serve them:
//! only a leader has deployments and nodes to show, and `berth_scheduler_leader` says which
//! one it is. The scheduler reads no kernel file: node figures come from the agents' reports.

mod state;
mod timed_store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proto::metrics_http::{Render, Scrape};
use berth_proto::v1::{Deployment, RolloutPhase};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::controller::Controller;
use crate::environments::key;
use crate::store::Store;

/// A deployment's labels (bounded: one set per deployment).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeploymentLabels {
    pub environment: String,
    pub deployment: String,
}

impl DeploymentLabels {
    /// The labels of the deployment the scheduler knows as `qualified` (`NAME` or `NAME.ENV`).
    pub(crate) fn of(qualified: &str) -> Self {
        let (environment, deployment) = key::split(qualified);
        Self {
            environment: environment.to_string(),
            deployment: deployment.to_string(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvironmentLabels {
    environment: String,
}

/// Cloneable handle on the scheduler's metrics: the control loop and the store record into
/// it, and scrapes read it with the leader's state of the moment.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    placement: Histogram,
    store_writes: Family<OpLabels, Histogram>,
    rollout_durations: Family<EnvironmentLabels, Histogram>,
    rollbacks: Family<DeploymentLabels, Counter>,
    approvals: Family<DeploymentLabels, Counter>,
    rejections: Family<DeploymentLabels, Counter>,
    /// The control loop while this scheduler leads (None: standing by).
    leader: Mutex<Option<Arc<Controller>>>,
    /// When each deployment's rollout of (revision) started, as this leader saw it.
    rollouts: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            // 100 µs to about 6.5 s: a placement is a filter and a score over the nodes plus
            // one store write; a store write is an fsync (redb) or an etcd round trip.
            placement: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            store_writes: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 17))
            }),
            // 1 s to about 4.5 h: rollouts include health checks and waiting for approval.
            rollout_durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 15))
            }),
            rollbacks: Family::default(),
            approvals: Family::default(),
            rejections: Family::default(),
            leader: Mutex::new(None),
            rollouts: Mutex::new(HashMap::new()),
        }
    }
}

/// While held, scrapes show the leader's deployments and nodes; dropped when it stops leading.
#[derive(Debug)]
pub(crate) struct Leading(Metrics);

impl Drop for Leading {
    fn drop(&mut self) {
        *self
            .0
            .inner
            .leader
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.0
            .inner
            .rollouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Metrics {
    /// This scheduler leads with `controller` until the guard is dropped.
    pub(crate) fn lead(&self, controller: Arc<Controller>) -> Leading {
        *self.inner.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(controller);
        Leading(self.clone())
    }

    /// `store`, with its writes timed.
    pub(crate) fn timed(&self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(timed_store::TimedStore::new(store, self.clone()))
    }

    /// One replica placed (its decision and the write binding it to a node).
    pub(crate) fn placed(&self, took: Duration) {
        self.inner.placement.observe(took.as_secs_f64());
    }

    pub(crate) fn store_write(&self, op: &'static str, took: Duration) {
        self.inner
            .store_writes
            .get_or_create(&OpLabels { op })
            .observe(took.as_secs_f64());
    }

    /// A rollback of deployment `qualified`: asked for, or after a failed rollout.
    pub(crate) fn rolled_back(&self, qualified: &str) {
        self.inner
            .rollbacks
            .get_or_create(&DeploymentLabels::of(qualified))
            .inc();
    }

    pub(crate) fn approved(&self, qualified: &str) {
        self.inner
            .approvals
            .get_or_create(&DeploymentLabels::of(qualified))
            .inc();
    }

    pub(crate) fn rejected(&self, qualified: &str) {
        self.inner
            .rejections
            .get_or_create(&DeploymentLabels::of(qualified))
            .inc();
    }

    /// The control loop published `new` for `qualified` (it was `old`): times rollouts from
    /// the first sight of a revision progressing to its completion.
    pub(crate) fn deployment_changed(
        &self,
        qualified: &str,
        old: Option<&Deployment>,
        new: &Deployment,
    ) {
        let mut rollouts = self
            .inner
            .rollouts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let same_revision = old.is_some_and(|o| o.revision == new.revision);
        match RolloutPhase::try_from(new.phase) {
            Ok(RolloutPhase::Progressing | RolloutPhase::AwaitingApproval) if !same_revision => {
                rollouts.insert(qualified.to_string(), (new.revision, Instant::now()));
            }
            Ok(RolloutPhase::Complete) => {
                if let Some((revision, started)) = rollouts.remove(qualified)
                    && revision == new.revision
                {
                    let labels = EnvironmentLabels {
                        environment: DeploymentLabels::of(qualified).environment,
                    };
                    self.inner
                        .rollout_durations
                        .get_or_create(&labels)
                        .observe(started.elapsed().as_secs_f64());
                }
            }
            Ok(RolloutPhase::Progressing | RolloutPhase::AwaitingApproval) => {}
            _ => {
                rollouts.remove(qualified);
            }
        }
    }

    /// One scrape's text (Prometheus format 0.0.4).
    fn render(&self) -> Result<String, String> {
        let mut registry = Registry::default();
        let leader = self
            .inner
            .leader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        state::register(&mut registry, leader.as_deref());
        self.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .map_err(|e| format!("encoding: {e}"))?;
        Ok(text)
    }

    fn register(&self, r: &mut Registry) {
        let i = &self.inner;
        r.register(
            "berth_scheduler_placement_duration_seconds",
            "Time to place one replica: filter, score and the store write binding it",
            i.placement.clone(),
        );
        r.register(
            "berth_scheduler_store_write_duration_seconds",
            "Time of one store write (op: put, delete or txn), failed ones included",
            i.store_writes.clone(),
        );
        r.register(
            "berth_deployment_rollout_duration_seconds",
            "Time from a revision's rollout starting (as this leader saw it) to its completion",
            i.rollout_durations.clone(),
        );
        r.register(
            "berth_deployment_rollbacks",
            "Rollbacks, asked for or after a failed rollout",
            i.rollbacks.clone(),
        );
        r.register(
            "berth_deployment_approvals",
            "Rollouts approved",
            i.approvals.clone(),
        );
        r.register(
            "berth_deployment_rejections",
            "Rollouts rejected, by a caller or an approval timeout",
            i.rejections.clone(),
        );
    }
}

/// Serves `metrics` on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let render: Render = Arc::new(move || -> Scrape {
        let metrics = metrics.clone();
        Box::pin(async move { metrics.render() })
    });
    berth_proto::metrics_http::serve(listener, render, shutdown).await
}

/// Stops the metrics server when dropped.
#[derive(Debug)]
pub(crate) struct Serving(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `config.metrics` on `config.metrics_listen` (if set) until the guard is dropped.
pub(crate) fn spawn(config: &crate::Config) -> Result<Serving, crate::error::SchedError> {
    let Some(listener) = &config.metrics_listen else {
        return Ok(Serving(None));
    };
    let taken = listener
        .try_clone()
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| {
            crate::error::SchedError::FailedPrecondition(format!("--metrics-listen: {e}"))
        })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = config.metrics.clone();
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stopped.await;
        };
        if let Err(e) = serve(taken, metrics, stopped).await {
            tracing::warn!("serving metrics: {e}");
        }
    });
    Ok(Serving(Some(stop)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(revision: u64, phase: RolloutPhase) -> Deployment {
        Deployment {
            revision,
            phase: phase as i32,
            ..Default::default()
        }
    }

    /// The value of the series line starting with `series` in `text`.
    fn line<'t>(text: &'t str, series: &str) -> Option<&'t str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn a_standby_shows_only_that_it_does_not_lead() {
        let text = Metrics::default().render().unwrap();
        assert_eq!(line(&text, "berth_scheduler_leader"), Some("0"), "{text}");
        assert_eq!(line(&text, "berth_scheduler_sessions"), None, "{text}");
        assert!(text.contains("# TYPE berth_scheduler_placement_duration_seconds histogram"));
    }

    #[test]
    fn a_rollout_is_timed_from_progressing_to_complete_of_the_same_revision() {
        let m = Metrics::default();
        let rollouts = "berth_deployment_rollout_duration_seconds_count";
        let staging = format!("{rollouts}{{environment=\"staging\"}}");
        let default = format!("{rollouts}{{environment=\"default\"}}");
        let p1 = deployment(1, RolloutPhase::Progressing);
        m.deployment_changed("web.staging", None, &p1);
        m.deployment_changed(
            "web.staging",
            Some(&p1),
            &deployment(1, RolloutPhase::Complete),
        );
        let text = m.render().unwrap();
        assert_eq!(line(&text, &staging), Some("1"), "{text}");
        // A revision that fails is not a completed rollout; nor is one whose start this
        // leader never saw.
        let p2 = deployment(2, RolloutPhase::Progressing);
        m.deployment_changed("web", None, &p2);
        m.deployment_changed("web", Some(&p2), &deployment(2, RolloutPhase::Failed));
        m.deployment_changed("web", None, &deployment(3, RolloutPhase::Complete));
        let text = m.render().unwrap();
        assert_eq!(line(&text, &default), None, "{text}");
        assert_eq!(line(&text, &staging), Some("1"), "{text}");
    }

    #[test]
    fn counters_are_per_deployment_and_environment() {
        let m = Metrics::default();
        m.approved("web.staging");
        m.approved("web.staging");
        m.rejected("web");
        m.rolled_back("api.prod");
        m.store_write("txn", Duration::from_millis(3));
        let text = m.render().unwrap();
        let approvals =
            "berth_deployment_approvals_total{environment=\"staging\",deployment=\"web\"}";
        assert_eq!(line(&text, approvals), Some("2"), "{text}");
        let rejections =
            "berth_deployment_rejections_total{environment=\"default\",deployment=\"web\"}";
        assert_eq!(line(&text, rejections), Some("1"), "{text}");
        let rollbacks = "berth_deployment_rollbacks_total{environment=\"prod\",deployment=\"api\"}";
        assert_eq!(line(&text, rollbacks), Some("1"), "{text}");
        let writes = "berth_scheduler_store_write_duration_seconds_count{op=\"txn\"}";
        assert_eq!(line(&text, writes), Some("1"), "{text}");
    }
}
