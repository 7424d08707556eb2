//! berth-scheduler: the control plane of a berth cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use berth_scheduler::ha::election::Election;
use berth_scheduler::store::Store;
use berth_scheduler::store::etcd::EtcdStore;
use berth_scheduler::store::redb::RedbStore;
use clap::Parser;

/// Places and rolls out deployments across the nodes whose agents connect to it.
#[derive(Debug, Parser)]
#[command(name = "berth-scheduler", version)]
struct Args {
    /// Where NodeService and DeploymentService listen.
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: String,
    /// Where the state store lives (DATA/state.redb).
    #[arg(
        long,
        env = "BERTH_SCHEDULER_DATA_DIR",
        default_value = "/var/lib/berth/scheduler"
    )]
    data_dir: PathBuf,
    /// The state store: `redb`, the embedded file in --data-dir (default), or
    /// `etcd://HOST:PORT[,HOST:PORT...]`, an etcd cluster.
    #[arg(long, default_value = "redb")]
    store: String,
    /// With an etcd store: the prefix of every key, so several clusters can share one etcd.
    #[arg(long, default_value = berth_scheduler::store::etcd::DEFAULT_PREFIX)]
    store_prefix: String,
    /// Node pod CIDRs (/24 each) come from this network.
    #[arg(long, default_value = "10.88.0.0/16")]
    pod_network: String,
    /// Services' virtual IPs come from this network; it must not overlap --pod-network or
    /// this host's networks.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: String,
    /// How long a replica being removed waits for every node to drop it from its load
    /// balancer (acknowledged) before it is stopped anyway.
    #[arg(long, default_value_t = 2000)]
    drain_timeout_ms: u64,
    /// Agents heartbeat this often.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Heartbeats a node may miss before it is NotReady.
    #[arg(long, default_value_t = 3)]
    missed_heartbeats: u32,
    /// How long a NotReady node's replicas wait before they are replaced elsewhere.
    #[arg(long, default_value_t = 2000)]
    reschedule_delay_ms: u64,
    /// text for people, json for log collectors.
    #[arg(long, default_value = "text")]
    log_format: String,
    #[command(flatten)]
    tls: berth_proto::tls::TlsFlags,
    /// With an etcd store: the URL other schedulers send clients and agents to while this one
    /// leads (default: http://LISTEN-ADDRESS, or https:// with TLS).
    #[arg(long)]
    advertise: Option<String>,
    /// With an etcd store: the leader's lease in seconds. A leader that dies is replaced after
    /// at most this long (at least 2: etcd's minimum); a leader that cannot renew it for two
    /// thirds of it steps down, so it must outlast an etcd leader election (about 1 s).
    #[arg(long, default_value_t = 5)]
    leader_lease_seconds: u64,
    /// The key file (`berth secret init-key`; JSON, mode 0600) whose key seals secrets in the
    /// store. Without it, secrets cannot be created or used; a missing or unreadable file, or
    /// one whose key does not open the stored secrets, stops the start.
    #[arg(long, value_name = "FILE")]
    secrets_key: Option<PathBuf>,
    /// How many cluster events (`berth events`) the store keeps; older ones are deleted.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    events_retention: u64,
    /// How many live events a `berth events --follow` client may fall behind before it is
    /// dropped (it is told the revision to resume from); at least one write batch, 49.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    events_buffer: u64,
    /// Where the web dashboard serves while this scheduler leads: without TLS plain HTTP, so a
    /// loopback address only; with the --tls-* flags HTTPS (client certificates or tokens), on
    /// any address; `off` for none [default: 127.0.0.1:7780, skipped with a warning when that
    /// port is taken].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Where Prometheus scrapes the scheduler's metrics (GET /metrics), as leader or standby
    /// (port 0: any free port, logged).
    #[arg(long, default_value = "127.0.0.1:9700")]
    metrics_listen: std::net::SocketAddr,
}

/// The dashboard's address when --http-listen is left out.
const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7780";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    berth_proto::logging::init(&args.log_format)?;
    // Checked before anything starts: None is the embedded store.
    let etcd_endpoints = if args.store == "redb" {
        None
    } else if args.store.starts_with("etcd://") {
        Some(EtcdStore::parse_url(&args.store).context("--store")?)
    } else {
        bail!(
            "--store {:?}: expected redb or etcd://HOST:PORT[,HOST:PORT...]",
            args.store
        );
    };
    // TLS files are read and checked now, so a bad one fails the start naming the file.
    let tls = args
        .tls
        .files(berth_proto::tls::Role::Scheduler)
        .context("TLS")?
        .map(|(files, _)| files);
    let security = berth_scheduler::auth::Security::load(tls.as_ref()).context("TLS")?;
    // Read now: a bad key file fails the start, naming it (the error never holds key bytes).
    let secrets_key = match &args.secrets_key {
        Some(path) => Some(berth_scheduler::files::KeyFile {
            key: berth_scheduler::secrets::SecretsKey::load(path).context("--secrets-key")?,
            path: path.clone(),
        }),
        None => None,
    };
    let config = berth_scheduler::Config {
        security,
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms.max(10)),
        missed_heartbeats: args.missed_heartbeats.max(1),
        reschedule_delay: Duration::from_millis(args.reschedule_delay_ms),
        pod_network: args
            .pod_network
            .parse()
            .with_context(|| format!("--pod-network {:?}", args.pod_network))?,
        service_network: args
            .service_cidr
            .parse()
            .with_context(|| format!("--service-cidr {:?}", args.service_cidr))?,
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        secrets_key,
        events: berth_scheduler::events::Settings {
            retention: args.events_retention,
            buffer: usize::try_from(args.events_buffer).context("--events-buffer")?,
        },
        http_listener: None,
        metrics: berth_scheduler::metrics::Metrics::default(),
        // Bound in `serve`, after the checks of --listen.
        metrics_listen: None,
    };
    berth_scheduler::check_config(&config).context("--service-cidr")?;
    if etcd_endpoints.is_none() {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating {}", args.data_dir.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args, config, etcd_endpoints, tls.is_some()))
}

/// The dashboard's listener: --http-listen's address, [`DEFAULT_HTTP_LISTEN`] when the flag
/// is left out (skipped if taken, so that several schedulers on one host still start), or
/// none for `off`. Without TLS (plain HTTP, loopback trust) a loopback address only.
async fn bind_dashboard(
    flag: Option<&str>,
    tls: bool,
) -> anyhow::Result<Option<Arc<tokio::net::TcpListener>>> {
    let addr = match flag {
        Some("off") => return Ok(None),
        Some(addr) => addr,
        None => DEFAULT_HTTP_LISTEN,
    };
    let parsed: std::net::SocketAddr = addr.parse().with_context(|| {
        format!("--http-listen {addr:?}: expected IP:PORT (a loopback address) or off")
    })?;
    if !tls && !parsed.ip().is_loopback() {
        bail!(
            "--http-listen {addr}: without TLS the dashboard serves plain HTTP, so on a \
             loopback address only (127.0.0.1 or [::1]); with the --tls-* flags it serves HTTPS \
             on any address"
        );
    }
    let scheme = if tls { "https" } else { "http" };
    match tokio::net::TcpListener::bind(parsed).await {
        Ok(listener) => {
            let local = listener.local_addr().context("the dashboard's address")?;
            tracing::info!(url = %format!("{scheme}://{local}/"), "dashboard");
            Ok(Some(Arc::new(listener)))
        }
        Err(e) if flag.is_none() && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(
                "no dashboard: its default address {addr} is in use (choose another with \
                 --http-listen, or --http-listen off)"
            );
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("--http-listen {addr}")),
    }
}

/// Binds `--metrics-listen` before anything is served, so that a taken address stops the
/// start naming the flag; the address it got goes to DATA/metrics-endpoint (with a data dir).
fn metrics_listener(
    addr: std::net::SocketAddr,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<std::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("--metrics-listen {addr}"))?;
    // tokio takes it over later; it must not block its worker threads.
    listener
        .set_nonblocking(true)
        .context("--metrics-listen: non-blocking")?;
    let local = listener
        .local_addr()
        .context("the metrics listener's address")?;
    if let Some(dir) = data_dir {
        let file = dir.join("metrics-endpoint");
        std::fs::write(&file, local.to_string())
            .with_context(|| format!("writing {}", file.display()))?;
    }
    tracing::info!(listen = %local, "metrics serving");
    Ok(listener)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Listens and serves until a signal: alone on the embedded store, or in an election on etcd.
async fn serve(
    args: Args,
    mut config: berth_scheduler::Config,
    etcd_endpoints: Option<Vec<String>>,
    tls: bool,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr().context("the listener's address")?;
    args.tls.check_listen(&local, tls)?;
    if !tls && !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "--insecure: serving plaintext with no authentication");
    }
    config.http_listener = bind_dashboard(args.http_listen.as_deref(), tls).await?;
    config.metrics_listen = Some(Arc::new(metrics_listener(
        args.metrics_listen,
        etcd_endpoints.is_none().then_some(args.data_dir.as_path()),
    )?));
    let Some(endpoints) = etcd_endpoints else {
        let store: Arc<dyn Store> = Arc::new(
            RedbStore::open(&args.data_dir.join("state.redb"))
                .with_context(|| format!("opening the store in {}", args.data_dir.display()))?,
        );
        berth_scheduler::run(config, store, listener, shutdown_signal()).await?;
        return Ok(());
    };
    let store = EtcdStore::connect(&endpoints, &args.store_prefix)
        .await
        .with_context(|| format!("connecting to the etcd store {}", args.store))?;
    tracing::info!(
        endpoints = ?endpoints,
        prefix = %args.store_prefix,
        "using the etcd store"
    );
    // Schedulers sharing an etcd elect one leader; the others stand by.
    let scheme = if config.security.enabled() {
        "https"
    } else {
        "http"
    };
    let url = args
        .advertise
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{local}"));
    let election = Arc::new(Election::new(
        store.clone(),
        url,
        Duration::from_secs(args.leader_lease_seconds),
    ));
    berth_scheduler::ha::run_ha(config, store, election, listener, shutdown_signal()).await?;
    Ok(())
}
