//! Runs the agent: adopts the node's containers, serves AgentService (with health and
//! reflection) on the given listener and keeps the scheduler session, until shutdown.

use std::future::Future;

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::Config;
use crate::containers::Containers;
use crate::error::AgentError;
use crate::grpc::AgentApi;

/// Serves until `shutdown` resolves. Containers keep running after it returns: the next
/// agent adopts them.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let local = listener
        .local_addr()
        .map_err(AgentError::io("reading the listener's address"))?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{local}"));
    let tls = config.tls.clone();
    let containers = Containers::open(config).await?;
    let endpoint_file = containers.layout().root.join("endpoint");
    crate::containers::record::write_atomic(&endpoint_file, advertise.as_bytes())?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServiceServer<AgentApi>>().await;
    let api = AgentServiceServer::new(AgentApi::new(containers.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let api = tonic::service::interceptor::InterceptedService::new(
        api,
        crate::tls::SchedulersOnly {
            enabled: tls.is_some(),
        },
    );
    let mut server = crate::tls::server(tls.as_ref()).map_err(|e| AgentError::Container {
        id: String::new(),
        reason: format!("TLS: {e}"),
    })?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = serve_metrics(&containers, stop_rx.clone()).await?;
    let dns = tokio::spawn(crate::dns::node::serve(containers.clone(), stop_rx.clone()));
    let session = tokio::spawn(crate::session::run(
        containers.clone(),
        advertise.clone(),
        stop_rx,
    ));
    tracing::info!(listen = %local, advertise = %advertise, node = %containers.config().node_name, "agent serving");
    let router =
        berth_proto::reflection::add_to(server.add_service(health_service)).map_err(|e| {
            AgentError::Container {
                id: String::new(),
                reason: format!("reflection: {e}"),
            }
        })?;
    let served = router
        .add_service(api)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    let _ = stop_tx.send(true);
    let _ = session.await;
    let _ = dns.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    let idle = containers.statuses().is_empty();
    let node = containers.config().node_name.clone();
    containers.detach_all();
    if idle {
        // Nothing left on the node calls a service: its load balancer (and the flows to
        // the virtual IPs) go with the agent. A node still running containers keeps it for
        // them until the next agent takes over.
        if let Some(net) = containers.network()
            && let Err(e) = net.remove_services().await
        {
            tracing::warn!(node = %node, "removing the service load balancer: {e}");
        }
        crate::cgroup::remove_node_cgroups(containers.config().cgroup_driver, &node);
    }
    served.map_err(|e| AgentError::Container {
        id: String::new(),
        reason: format!("serving: {e}"),
    })
}

/// Binds `--metrics-listen` (a taken address stops the start, naming the flag), records the
/// address it got in DATA/agent/metrics-endpoint and serves /metrics until `stop`.
async fn serve_metrics(
    containers: &Containers,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, AgentError> {
    let Some(addr) = containers.config().metrics_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(AgentError::io(format!("--metrics-listen {addr}")))?;
    let local = listener
        .local_addr()
        .map_err(AgentError::io("reading the metrics listener's address"))?;
    let file = containers.layout().root.join("metrics-endpoint");
    crate::containers::record::write_atomic(&file, local.to_string().as_bytes())?;
    tracing::info!(listen = %local, "metrics serving");
    let containers = containers.clone();
    Ok(Some(tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = crate::metrics::serve(listener, containers, stopped).await {
            tracing::warn!("serving metrics: {e}");
        }
    })))
}
