//! A standby's dashboard: every request is sent (303 See Other, same path and query) to the
//! dashboard of the scheduler that leads, whose address the leader publishes in the store
//! when its dashboard starts; without a leader, or before it has published, a 503 page says
//! which scheduler leads, if any.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header::LOCATION};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use super::view::PageError;
use crate::ha::election::Election;
use crate::store::{Expect, Store};

/// Where the leader's dashboard serves: `http://127.0.0.1:7780` or `https://0.0.0.0:7780`,
/// written by the leader (a fenced write) when its dashboard starts.
pub(crate) const LEADER_DASHBOARD_KEY: &str = "/dashboard/leader";

/// Publishes `addr` as the leader's dashboard; a failure only costs standbys their redirect.
pub(crate) async fn publish(store: &Arc<dyn Store>, addr: SocketAddr, https: bool) {
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    if let Err(e) = store
        .put(LEADER_DASHBOARD_KEY, url.into_bytes(), Expect::Any)
        .await
    {
        tracing::warn!("dashboard: publishing its address for standbys: {e}");
    }
}

#[derive(Clone)]
struct Standby {
    store: Arc<dyn Store>,
    election: Arc<Election>,
}

/// Serves the standby's dashboard on `listener` until `stop` turns true (it then leads, or
/// shuts down).
pub(crate) async fn serve(
    listener: Arc<TcpListener>,
    https: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    store: Arc<dyn Store>,
    election: Arc<Election>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    tracing::info!(listen = ?listener.local_addr().ok(), "dashboard standing by: sends visitors to the leader's");
    let router = Router::new()
        .fallback(to_leader)
        .with_state(Standby { store, election });
    super::serve_router(listener, https, router, stop).await;
}

async fn to_leader(State(s): State<Standby>, req: Request) -> Response {
    let Some(leader) = s.election.leader().await else {
        return PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this scheduler ({}) stands by and no scheduler leads at the moment: try again \
                 in a few seconds",
                s.election.url()
            ),
        )
        .into_response();
    };
    let published = match s.store.get(LEADER_DASHBOARD_KEY).await {
        Ok(kv) => kv.and_then(|kv| String::from_utf8(kv.value).ok()),
        Err(e) => {
            tracing::warn!("dashboard standing by: reading the leader's address: {e}");
            None
        }
    };
    let target = published.and_then(|dashboard| {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        HeaderValue::from_str(&format!("{}{path}", reachable(&dashboard, &leader))).ok()
    });
    match target {
        Some(location) => (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response(),
        None => PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this scheduler stands by; {leader} leads, and its dashboard has not said \
                 where it serves yet"
            ),
        )
        .into_response(),
    }
}

/// The leader's dashboard URL as a visitor can reach it: a dashboard bound to every address
/// (`0.0.0.0`, `[::]`) is reached at the host of the leader's advertised gRPC URL.
fn reachable(dashboard: &str, leader_grpc: &str) -> String {
    let Some((scheme, addr)) = dashboard.split_once("://") else {
        return dashboard.to_string();
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return dashboard.to_string();
    };
    if !addr.ip().is_unspecified() {
        return dashboard.to_string();
    }
    let host = leader_grpc
        .split_once("://")
        .map_or(leader_grpc, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        _ => host,
    };
    format!("{scheme}://{host}:{}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::reachable;

    #[test]
    fn a_dashboard_on_every_address_is_reached_at_the_leaders_host() {
        let grpc = "https://sched-1.example:7700";
        assert_eq!(
            reachable("http://127.0.0.1:7780", grpc),
            "http://127.0.0.1:7780"
        );
        assert_eq!(
            reachable("https://0.0.0.0:7780", grpc),
            "https://sched-1.example:7780"
        );
        assert_eq!(
            reachable("https://[::]:7780", "http://[fd00::1]:7700"),
            "https://[fd00::1]:7780"
        );
        assert_eq!(
            reachable("https://0.0.0.0:7780", "10.0.0.1:7700"),
            "https://10.0.0.1:7780"
        );
    }
}
