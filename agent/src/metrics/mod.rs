//! The agent's Prometheus metrics on `--metrics-listen`: one series set per running
//! container, under cAdvisor's names so that existing dashboards work, read from the cgroup
//! files when a scrape asks (nothing polls between scrapes).

mod cgroup;
mod parse;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use berth_proto::metrics_http::{Render, Scrape};
use berth_proto::v1::ContainerState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::containers::Containers;
use cgroup::Hierarchies;

/// A container's labels: bounded by the cluster's deployments except for the id.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    node: String,
    environment: String,
    deployment: String,
    container_id: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    #[prometheus(flatten)]
    container: ContainerLabels,
    interface: String,
}

/// One scrape's families, filled from the containers and registered under cAdvisor's names.
#[derive(Default)]
struct Families {
    cpu: Family<ContainerLabels, Counter<f64, AtomicU64>>,
    throttled: Family<ContainerLabels, Counter>,
    usage: Family<ContainerLabels, Gauge<u64, AtomicU64>>,
    working_set: Family<ContainerLabels, Gauge<u64, AtomicU64>>,
    limit: Family<ContainerLabels, Gauge<u64, AtomicU64>>,
    ooms: Family<ContainerLabels, Counter>,
    receive: Family<InterfaceLabels, Counter>,
    transmit: Family<InterfaceLabels, Counter>,
    start: Family<ContainerLabels, Gauge<f64, AtomicU64>>,
}

impl Families {
    fn add(&self, labels: &ContainerLabels, s: &cgroup::Stats) {
        if let Some(v) = s.cpu_seconds {
            self.cpu.get_or_create(labels).inc_by(v);
        }
        let counters = [
            (&self.throttled, s.throttled_periods),
            (&self.ooms, s.oom_kills),
        ];
        for (family, value) in counters {
            if let Some(v) = value {
                family.get_or_create(labels).inc_by(v);
            }
        }
        let gauges = [
            (&self.usage, s.memory_usage),
            (&self.working_set, s.working_set),
            (&self.limit, s.memory_limit),
        ];
        for (family, value) in gauges {
            if let Some(v) = value {
                family.get_or_create(labels).set(v);
            }
        }
    }

    fn register(self, r: &mut Registry) {
        r.register(
            "container_cpu_usage_seconds",
            "Cumulative cpu time consumed in seconds",
            self.cpu,
        );
        r.register(
            "container_cpu_cfs_throttled_periods",
            "Number of throttled period intervals",
            self.throttled,
        );
        r.register(
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was accessed",
            self.usage,
        );
        r.register(
            "container_memory_working_set_bytes",
            "Current working set in bytes (usage less inactive file cache)",
            self.working_set,
        );
        r.register(
            "container_spec_memory_limit_bytes",
            "Memory limit for the container (0: unlimited)",
            self.limit,
        );
        r.register(
            "container_oom_events",
            "Count of out of memory events observed for the container",
            self.ooms,
        );
        r.register(
            "container_network_receive_bytes",
            "Cumulative count of bytes received",
            self.receive,
        );
        r.register(
            "container_network_transmit_bytes",
            "Cumulative count of bytes transmitted",
            self.transmit,
        );
        r.register(
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds",
            self.start,
        );
    }
}

/// An assignment's environment as the scheduler names it (empty is the default one).
fn environment_label(environment: &str) -> String {
    if environment.is_empty() {
        "default".to_string()
    } else {
        environment.to_string()
    }
}

/// The deployment's own name: the scheduler qualifies one outside the default environment as
/// `NAME.ENV`, which the environment label already says.
fn deployment_label(deployment: &str, environment: &str) -> String {
    deployment
        .strip_suffix(environment)
        .and_then(|d| d.strip_suffix('.'))
        .filter(|_| !environment.is_empty())
        .unwrap_or(deployment)
        .to_string()
}

/// Milliseconds since the epoch as seconds (a ratio: precision loss is the point).
#[allow(clippy::cast_precision_loss)]
fn epoch_seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// One scrape: the running containers' figures as Prometheus text (format 0.0.4).
fn render(containers: &Containers, hierarchies: &Hierarchies) -> Result<String, String> {
    let node = containers.config().node_name.clone();
    let families = Families::default();
    let running = containers
        .assigned_statuses()
        .into_iter()
        .filter(|(_, s)| s.state == ContainerState::Running as i32 && s.pid != 0);
    for (assignment, status) in running {
        let labels = ContainerLabels {
            node: node.clone(),
            environment: environment_label(&assignment.environment),
            deployment: deployment_label(&assignment.deployment, &assignment.environment),
            container_id: assignment.container_id.clone(),
        };
        let dir = crate::cgroup::container_cgroup(
            containers.config().cgroup_driver,
            &node,
            &assignment.container_id,
        )
        .dir;
        let rel = dir.strip_prefix("/").unwrap_or(&dir);
        families.add(&labels, &cgroup::stats(hierarchies, rel));
        for i in cgroup::network(status.pid) {
            let key = InterfaceLabels {
                container: labels.clone(),
                interface: i.name,
            };
            families.receive.get_or_create(&key).inc_by(i.receive);
            families.transmit.get_or_create(&key).inc_by(i.transmit);
        }
        if status.started_at_ms > 0 {
            families
                .start
                .get_or_create(&labels)
                .set(epoch_seconds(status.started_at_ms));
        }
    }
    let mut registry = Registry::default();
    families.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .map_err(|e| format!("encoding: {e}"))?;
    Ok(text)
}

/// Serves the node's metrics on `listener` until `shutdown` (the files are read on a
/// blocking thread: the runtime's two workers keep serving gRPC meanwhile).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    containers: Containers,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hierarchies = Hierarchies::detect(Path::new("/sys/fs/cgroup"));
    let render: Render = Arc::new(move || -> Scrape {
        let (containers, hierarchies) = (containers.clone(), hierarchies.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || render(&containers, &hierarchies))
                .await
                .map_err(|e| format!("the scrape's task: {e}"))?
        })
    });
    berth_proto::metrics_http::serve(listener, render, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_deployment_and_its_environment_apart() {
        assert_eq!(deployment_label("hello", ""), "hello");
        assert_eq!(deployment_label("hello.staging", "staging"), "hello");
        assert_eq!(deployment_label("hello", "staging"), "hello");
        assert_eq!(environment_label(""), "default");
        assert_eq!(environment_label("staging"), "staging");
    }
}
