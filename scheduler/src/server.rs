//! Runs the scheduler: NodeService for agents, DeploymentService, ConfigService,
//! SecretService, EnvironmentService, ReleaseService and EventService for clients on one
//! listener (with health and reflection), and the control loop, until shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::config_service_server::ConfigServiceServer;
use berth_proto::v1::deployment_service_server::DeploymentServiceServer;
use berth_proto::v1::environment_service_server::EnvironmentServiceServer;
use berth_proto::v1::event_service_server::EventServiceServer;
use berth_proto::v1::node_service_server::NodeServiceServer;
use berth_proto::v1::release_service_server::ReleaseServiceServer;
use berth_proto::v1::secret_service_server::SecretServiceServer;
use ipnet::Ipv4Net;
use tokio::net::TcpListener;
use tonic::transport::server::Router;

use crate::audit::Audit;
use crate::cluster::Cluster;
use crate::controller::Controller;
use crate::deployments::Deployments;
use crate::environments::Environments;
use crate::error::SchedError;
use crate::files::Files;
use crate::grpc::deployments::DeployApi;
use crate::grpc::environments::EnvironmentApi;
use crate::grpc::events::EventApi;
use crate::grpc::files::FilesApi;
use crate::grpc::nodes::NodeApi;
use crate::grpc::releases::ReleaseApi;
use crate::nodes::Nodes;
use crate::records::{self, NODES, NodeRecord};
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct Config {
    pub heartbeat_interval: Duration,
    /// Heartbeats a node may miss before it is NotReady.
    pub missed_heartbeats: u32,
    pub reschedule_delay: Duration,
    pub pod_network: Ipv4Net,
    /// Services' virtual IPs come from here; it must not overlap the pod network or this
    /// host's networks.
    pub service_network: Ipv4Net,
    /// How long a replica being removed waits for every node to drop it from its load
    /// balancer before it is stopped anyway.
    pub drain_timeout: Duration,
    /// TLS and authentication (off by default: loopback trust).
    pub security: crate::auth::Security,
    /// The key secrets are sealed with (`--secrets-key`); without it no secret is kept.
    pub secrets_key: Option<crate::files::KeyFile>,
    // The event log: how many events are kept, how far a live reader may fall behind.
    pub events: crate::events::Settings,
    // The dashboard's listener (`--http-listen`, loopback only), served while this scheduler
    // leads; None: no dashboard. Shared, so that a standby that takes over serves the same
    // socket.
    pub http_listener: Option<Arc<TcpListener>>,
    // What /metrics shows: shared by every leadership term of this process.
    pub metrics: crate::metrics::Metrics,
    // Where GET /metrics is served, by the leader and a standby alike (`--metrics-listen`;
    // None: not served). A std listener, so that each server takes its own handle on it.
    pub metrics_listen: Option<Arc<std::net::TcpListener>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            missed_heartbeats: 3,
            reschedule_delay: Duration::from_secs(2),
            pod_network: "10.88.0.0/16".parse().expect("a valid network"),
            service_network: "10.96.0.0/16".parse().expect("a valid network"),
            drain_timeout: Duration::from_secs(2),
            security: crate::auth::Security::default(),
            secrets_key: None,
            events: crate::events::Settings::default(),
            http_listener: None,
            metrics: crate::metrics::Metrics::default(),
            metrics_listen: None,
        }
    }
}

/// How long a server that was told to stop waits for open calls (sessions, watches) before
/// it drops them.
pub(crate) const DRAIN: Duration = Duration::from_secs(2);

/// Serves as the one scheduler of a cluster (no election) until `shutdown`.
pub async fn run(
    config: Config,
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SchedError> {
    check_config(&config)?;
    let _metrics = crate::metrics::spawn(&config)?;
    serve_leader(config, store, Arc::new(listener), shutdown).await
}

/// Refuses settings that cannot work, before anything is served: a service network that
/// overlaps the pod network or this host's networks.
pub fn check_config(config: &Config) -> Result<(), SchedError> {
    crate::vips::check_network(
        config.service_network,
        config.pod_network,
        &crate::vips::host_networks()?,
    )
}

/// The listener's connections, for one server after another on the same socket (a standby
/// that becomes the leader keeps its address).
pub(crate) fn incoming(
    listener: Arc<TcpListener>,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

/// Runs the server `serve` makes (given the future that starts its graceful shutdown) until
/// it ends or `stop` resolves; then lets open calls finish for [`DRAIN`] and drops
/// the rest (agents' sessions and watches never end by themselves).
pub(crate) async fn serve_until<F>(
    serve: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    stop: impl Future<Output = ()>,
) -> Result<(), SchedError>
where
    F: Future<Output = Result<(), tonic::transport::Error>>,
{
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let server = serve(Box::pin(async move {
        let _ = drain_rx.await;
    }));
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result,
        () = stop => {
            let _ = drain_tx.send(());
            match tokio::time::timeout(DRAIN, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::info!("open calls cut after {:?}", DRAIN);
                    Ok(())
                }
            }
        }
    };
    result.map_err(|e| SchedError::FailedPrecondition(format!("serving: {e}")))
}

/// What every scheduler serves besides its own services, leader or standby: gRPC health
/// (DeploymentService serving; NodeService only where `serves_nodes`, since a standby sends
/// agents away) and reflection, v1 and v1alpha.
pub(crate) async fn with_health_and_reflection<L>(
    router: Router<L>,
    serves_nodes: bool,
) -> Result<Router<L>, SchedError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<DeploymentServiceServer<DeployApi>>()
        .await;
    health.set_serving::<ConfigServiceServer<FilesApi>>().await;
    health.set_serving::<SecretServiceServer<FilesApi>>().await;
    health
        .set_serving::<EnvironmentServiceServer<EnvironmentApi>>()
        .await;
    health
        .set_serving::<ReleaseServiceServer<ReleaseApi>>()
        .await;
    health.set_serving::<EventServiceServer<EventApi>>().await;
    if serves_nodes {
        health.set_serving::<NodeServiceServer<NodeApi>>().await;
    } else {
        health.set_not_serving::<NodeServiceServer<NodeApi>>().await;
    }
    berth_proto::reflection::add_to(router.add_service(health_service))
        .map_err(|e| SchedError::FailedPrecondition(format!("reflection: {e}")))
}

/// The dashboard (issue 17) on its own listener, when there is one, stopped with the control
/// loop (`stop`).
fn spawn_dashboard(
    config: &Config,
    deploy: &DeployApi,
    events: &crate::events::EventLog,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, SchedError> {
    let Some(http) = config.http_listener.clone() else {
        return Ok(None);
    };
    let ui = crate::dashboard::Dashboard::new(
        deploy.clone(),
        deploy.environments.clone(),
        events.clone(),
        stop,
    )?;
    Ok(Some(tokio::spawn(crate::dashboard::serve(http, ui))))
}

/// Serves as the leader: the control loop, NodeService and DeploymentService.
pub(crate) async fn serve_leader(
    config: Config,
    store: Arc<dyn Store>,
    listener: Arc<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SchedError> {
    let store = config.metrics.timed(store);
    let grace = config.heartbeat_interval * config.missed_heartbeats;
    let cluster = Arc::new(Cluster::new(config.heartbeat_interval, grace));
    // Nodes known before a restart get time to reconnect before their replicas move.
    let (nodes, _) = store.list(NODES).await?;
    for kv in nodes {
        let record: NodeRecord = records::decode(&kv.key, &kv.value)?;
        cluster.remember(record, Duration::from_secs(10));
    }
    // A store with secrets this key does not open is never served (nor rewritten).
    let files = Files::new(store.clone(), config.secrets_key.clone());
    files.check_key().await?;
    let deployments = Deployments::new(store.clone(), config.service_network)
        .with_files(files.clone())
        .with_metrics(config.metrics.clone());
    // The event log lives in the store: a new leader continues it where the last one stopped.
    let (publisher, event_log) = crate::events::start(store.clone(), config.events);
    let controller = Arc::new(
        Controller::new(
            deployments.clone(),
            store.clone(),
            cluster.clone(),
            config.reschedule_delay,
            config.drain_timeout,
            files.clone(),
        )
        .with_events(publisher.clone())
        .with_metrics(config.metrics.clone()),
    );
    let _leading = config.metrics.lead(controller.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let control = tokio::spawn(controller.clone().run(stop_rx.clone()));

    let node_api = NodeServiceServer::new(NodeApi {
        nodes: Nodes {
            store: store.clone(),
            cluster: cluster.clone(),
            pod_network: config.pod_network,
            service_network: config.service_network,
        },
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let audit = Audit::new(store.clone()).with_events(publisher);
    let (config_api, secret_api) = FilesApi {
        files,
        deployments: deployments.clone(),
        audit: audit.clone(),
    }
    .services();
    let environments = Environments::new(store.clone());
    let deploy = DeployApi {
        deployments,
        controller,
        security: config.security.clone(),
        audit,
        environments: environments.clone(),
    };
    let release_api = ReleaseApi {
        deploy: deploy.clone(),
    }
    .service();
    let environment_api = EnvironmentServiceServer::new(EnvironmentApi { environments })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let dashboard = spawn_dashboard(&config, &deploy, &event_log, stop_rx)?;
    let deploy_api = DeploymentServiceServer::new(deploy)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let local = listener.local_addr().ok();
    tracing::info!(listen = ?local, "scheduler serving");
    let router = with_health_and_reflection(
        config.security.server(store.clone())?.add_service(node_api),
        true,
    )
    .await?
    .add_service(deploy_api)
    .add_service(release_api)
    .add_service(config_api)
    .add_service(secret_api)
    .add_service(environment_api)
    .add_service(crate::grpc::auth::token_service(store.clone()))
    .add_service(EventApi { log: event_log }.service());
    let served = serve_until(
        |drained| router.serve_with_incoming_shutdown(incoming(listener), drained),
        shutdown,
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = control.await;
    if let Some(dashboard) = dashboard {
        let _ = dashboard.await;
    }
    served
}
