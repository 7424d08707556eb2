//! The agent's DNS server on this node: once the node network is up, it listens on the
//! bridge's gateway address, port 53, UDP and TCP, in the node netns, until the agent stops.

use tokio::sync::watch;

use super::{DNS_PORT, to_tokio};
use crate::containers::Containers;

/// Serves the node's DNS until `stop` turns true. A failure to listen (port 53 taken on the
/// gateway) is logged and leaves the agent running: containers then fail to resolve, which
/// the log explains.
pub(crate) async fn serve(containers: Containers, mut stop: watch::Receiver<bool>) {
    let net = tokio::select! {
        net = containers.network_ready() => net,
        _ = stop.wait_for(|s| *s) => return,
    };
    let addr = std::net::SocketAddr::from((net.gateway(), DNS_PORT));
    let sockets = net
        .bind_gateway(DNS_PORT)
        .await
        .map_err(|e| e.to_string())
        .and_then(|(udp, tcp)| to_tokio(udp, tcp).map_err(|e| e.to_string()));
    let (udp, tcp) = match sockets {
        Ok(sockets) => sockets,
        Err(e) => {
            tracing::error!(listen = %addr, "node DNS: cannot listen: {e}");
            return;
        }
    };
    tracing::info!(listen = %addr, "node DNS serving");
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    match containers.dns().serve(udp, tcp, shutdown).await {
        Ok(()) => tracing::info!(listen = %addr, "node DNS stopped"),
        Err(e) => tracing::error!(listen = %addr, "node DNS: {e}"),
    }
}
