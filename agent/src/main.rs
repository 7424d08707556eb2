//! berth-agent: runs and networks the containers a scheduler assigns to this node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use berth_agent::capacity::{host_total, parse_cpu, parse_memory};
use berth_agent::restart::Backoff;
use berth_agent::shim::ShimConfig;
use berth_proto::v1::Resources;
use clap::Parser;

/// Runs the containers a berth scheduler assigns to this node and reports them.
#[derive(Debug, Parser)]
#[command(name = "berth-agent", version)]
struct Args {
    /// The scheduler's address: HOST:PORT (dialled over https with the --tls-* flags, http
    /// without) or http[s]://HOST:PORT; or several comma-separated (schedulers sharing an
    /// etcd: the agent follows the leader).
    #[arg(long, env = "BERTH_SCHEDULER")]
    scheduler: String,
    /// This node's name, unique in the cluster.
    #[arg(long)]
    node_name: String,
    /// Node labels for placement: k=v,k2=v2.
    #[arg(long, value_parser = parse_labels, default_value = "")]
    labels: Labels,
    /// Where images, containers and the agent's state live.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "/var/lib/berth")]
    data_dir: PathBuf,
    /// Where AgentService listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7701")]
    listen: String,
    /// The address the scheduler reaches this agent at (default: the listener's).
    #[arg(long)]
    advertise: Option<String>,
    /// The node's CPU capacity (cores like 2, or millicores like 1500m); default: the host's.
    #[arg(long, value_parser = parse_cpu)]
    cpu: Option<u64>,
    /// The node's memory capacity (bytes, or 512m, 4g); default: the host's.
    #[arg(long, value_parser = parse_memory)]
    memory: Option<u64>,
    /// CPU kept for the system and the agent.
    #[arg(long, value_parser = parse_cpu, default_value = "100m")]
    reserve_cpu: u64,
    /// Memory kept for the system and the agent.
    #[arg(long, value_parser = parse_memory, default_value = "256m")]
    reserve_memory: u64,
    /// The address other nodes route this node's pod CIDR to.
    #[arg(long, default_value = "127.0.0.1")]
    node_address: String,
    /// Run the node's container network in this network namespace (default: the agent's).
    #[arg(long)]
    net_namespace: Option<PathBuf>,
    /// The first restart delay of a crashing container (doubles up to --restart-backoff-max-ms).
    #[arg(long, default_value_t = 1000)]
    restart_backoff_base_ms: u64,
    #[arg(long, default_value_t = 60_000)]
    restart_backoff_max_ms: u64,
    /// Seconds between SIGTERM and SIGKILL when a container is stopped.
    #[arg(long, default_value_t = 10)]
    stop_grace: u64,
    /// Each container log part's size cap.
    #[arg(long, value_parser = parse_memory, default_value = "10m")]
    log_max_bytes: u64,
    /// Log parts kept per container (the current one included).
    #[arg(long, default_value_t = 3)]
    log_files: u32,
    /// text for people, json for log collectors.
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Resolvers the node's DNS server forwards names outside the cluster to: IP[:PORT],
    /// comma-separated (default: the nameservers of the host's /etc/resolv.conf).
    #[arg(long)]
    dns_upstream: Option<String>,
    /// A host directory under which deployments may bind-mount (repeatable); anything else
    /// is refused. Sent to the scheduler, which places replicas with binds accordingly.
    #[arg(long = "allow-bind", value_name = "PATH")]
    allow_bind: Vec<PathBuf>,
    /// Where Prometheus scrapes this node's container metrics (GET /metrics; port 0: any
    /// free port, written to DATA/agent/metrics-endpoint).
    #[arg(long, default_value = "127.0.0.1:9701")]
    metrics_listen: std::net::SocketAddr,
    /// How containers get cgroups: systemd (a scope per container in the node's slice,
    /// through systemd; needs systemd as PID 1 on cgroup v2), cgroupfs (directories the
    /// runtime writes), or auto (systemd where the host can, else cgroupfs).
    #[arg(long, default_value = "auto", value_parser = ["auto", "systemd", "cgroupfs"])]
    cgroup_driver: String,
    #[command(flatten)]
    tls: berth_proto::tls::TlsFlags,
}

type Labels = BTreeMap<String, String>;

fn parse_labels(text: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?} is not key=value"))?;
        if k.is_empty() {
            return Err(format!("label {pair:?} has an empty key"));
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    berth_proto::logging::init(&args.log_format)?;
    let host = host_total();
    let mut shim = ShimConfig::beside_current_exe()?;
    shim.log_max_bytes = args.log_max_bytes;
    shim.log_files = args.log_files;
    let cgroup_driver = berth_agent::cgroup::CgroupDriver::choose(&args.cgroup_driver)
        .map_err(anyhow::Error::msg)
        .context("--cgroup-driver")?;
    shim.systemd_cgroup = cgroup_driver == berth_agent::cgroup::CgroupDriver::Systemd;
    // Checked before anything starts: a node runs under its own certificate or none.
    let tls = berth_agent::tls::load(&args.tls, &args.node_name).context("TLS")?;
    berth_agent::tls::check_scheduler(&args.scheduler, tls.is_some())
        .context("invalid --scheduler")?;
    let tls_on = tls.is_some();
    let dns_upstream = dns_upstream(args.dns_upstream.as_deref())?;
    let allow_bind = allow_bind(&args.allow_bind)?;
    let config = berth_agent::Config {
        tls,
        scheduler: args.scheduler,
        node_name: args.node_name,
        labels: args.labels,
        data_dir: args.data_dir,
        total: Resources {
            cpu_millis: args.cpu.unwrap_or(host.cpu_millis),
            memory_bytes: args.memory.unwrap_or(host.memory_bytes),
        },
        reserved: Resources {
            cpu_millis: args.reserve_cpu,
            memory_bytes: args.reserve_memory,
        },
        node_address: args.node_address,
        advertise: args.advertise,
        net_namespace: args.net_namespace,
        shim,
        backoff: Backoff {
            base: Duration::from_millis(args.restart_backoff_base_ms),
            max: Duration::from_millis(args.restart_backoff_max_ms),
            ..Backoff::default()
        },
        stop_grace: Duration::from_secs(args.stop_grace),
        reconnect_max: Duration::from_secs(5),
        dns_upstream,
        allow_bind,
        metrics_listen: Some(args.metrics_listen),
        cgroup_driver,
    };
    berth_agent::containers::valid_id(&config.node_name).context("invalid --node-name")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let local = listener.local_addr().context("the listener's address")?;
        args.tls.check_listen(&local, tls_on)?;
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down; containers keep running");
        };
        berth_agent::run(config, listener, shutdown).await?;
        Ok(())
    })
}

/// `--allow-bind` paths, canonical (symlinks resolved, so the scheduler and the checks compare
/// real paths); a missing one stops the agent, naming it.
fn allow_bind(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    paths
        .iter()
        .map(|p| {
            std::fs::canonicalize(p)
                .with_context(|| format!("invalid --allow-bind {}: cannot resolve it", p.display()))
        })
        .collect()
}

/// The flag's resolvers, or else the host's (none readable: names outside the cluster are
/// refused, which the log says).
fn dns_upstream(flag: Option<&str>) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    use berth_agent::dns::{host_upstreams, parse_upstreams};
    if let Some(text) = flag {
        return parse_upstreams(text).context("invalid --dns-upstream");
    }
    match host_upstreams(std::path::Path::new("/etc/resolv.conf")) {
        Ok(found) if !found.is_empty() => Ok(found),
        Ok(_) => {
            tracing::warn!("no nameserver in /etc/resolv.conf: the node DNS will not forward");
            Ok(Vec::new())
        }
        Err(e) => {
            tracing::warn!("{e}: the node DNS will not forward");
            Ok(Vec::new())
        }
    }
}
