//! The web dashboard (issue 17): the cluster, deployments per environment, a deployment's
//! history and replicas, releases and a container's log, served by the leader on
//! `--http-listen` with axum; pages are askama templates, assets are embedded (rust-embed),
//! live updates come over server-sent events that htmx swaps in. Actions (approve, reject,
//! rollback, scale) go through the same DeploymentService handlers as gRPC calls, after the
//! same role rule ([`crate::auth::Access::Write`]) and a CSRF check, so they are audited alike.

mod actions;
mod assets;
mod https;
mod live;
mod pages;
mod session;
pub(crate) mod standby;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::auth::Tokens;
use crate::environments::Environments;
use crate::events::EventLog;
use crate::grpc::deployments::DeployApi;
use crate::grpc::releases::ReleaseApi;

/// The largest form body accepted: actions carry a CSRF token and a number or two.
const MAX_FORM_BYTES: usize = 4096;

/// What every handler reads: the same domain handles the gRPC services use.
#[derive(Debug, Clone)]
pub(crate) struct Dashboard {
    deploy: DeployApi,
    releases: ReleaseApi,
    environments: Environments,
    /// A deployment's page reads its events from here.
    events: EventLog,
    tokens: Tokens,
    /// With TLS on, the scheduler trusts nobody anonymous, so neither does the dashboard:
    /// every visitor signs in with a token. Without TLS, loopback callers are trusted as they
    /// are on gRPC, and a token only narrows what they may do.
    require_login: bool,
    /// With TLS on, the dashboard serves HTTPS with this (the scheduler's certificate, client
    /// certificates from the cluster CA).
    https: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Signs CSRF tokens; new at every start, so a restart invalidates open forms.
    csrf_key: Arc<[u8; 32]>,
    /// Turns true when the leader's term ends: live streams end with it, so that the server
    /// can stop.
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Dashboard {
    pub(crate) fn new(
        deploy: DeployApi,
        environments: Environments,
        events: EventLog,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, crate::error::SchedError> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(|e| {
            crate::error::SchedError::FailedPrecondition(format!("dashboard CSRF key: {e}"))
        })?;
        // With TLS on, the scheduler trusts nobody anonymous, and serves the dashboard over
        // HTTPS.
        let (require_login, https) = (deploy.security.enabled(), deploy.security.https());
        Ok(Self {
            tokens: Tokens::new(deploy.controller.store.clone()),
            releases: ReleaseApi {
                deploy: deploy.clone(),
            },
            deploy,
            environments,
            events,
            require_login,
            https,
            csrf_key: Arc::new(key),
            stop,
        })
    }

    fn router(self) -> Router {
        Router::new()
            .route("/", get(pages::cluster))
            .route("/deployments", get(pages::deployments))
            .route("/deployments/{env}/{name}", get(pages::deployment))
            .route("/deployments/{env}/{name}/{action}", post(actions::act))
            .route("/releases", get(pages::releases))
            .route("/containers/{id}/log", get(pages::log))
            .route("/containers/{id}/log/live", get(live::log))
            .route("/live", get(live::changes))
            .route("/login", get(session::login_page).post(session::login))
            .route("/logout", post(session::logout))
            .route("/assets/{file}", get(assets::serve))
            .fallback(pages::not_found)
            .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                session::guard,
            ))
            .with_state(self)
    }
}

/// Serves the dashboard on `listener` (over HTTPS when TLS is on) until its stop turns true
/// (the leader's term ends), then lets open requests finish for [`crate::server::DRAIN`].
pub(crate) async fn serve(listener: Arc<TcpListener>, dashboard: Dashboard) {
    let local = listener.local_addr().ok();
    let https = dashboard.https.clone();
    tracing::info!(listen = ?local, https = https.is_some(), "dashboard serving");
    if let Some(addr) = local {
        standby::publish(&dashboard.deploy.controller.store, addr, https.is_some()).await;
    }
    let stop = dashboard.stop.clone();
    serve_router(listener, https, dashboard.router(), stop).await;
}

/// Serves `router` on `listener` (over HTTPS with `https`) until `stop` turns true, then lets
/// open requests finish for [`crate::server::DRAIN`]: the leader's dashboard and a standby's.
async fn serve_router(
    listener: Arc<TcpListener>,
    https: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    router: Router,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut stopping = stop.clone();
    let mut stopped = stop;
    let stopping = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    // Each request learns its connection's verified client certificate, if any.
    let app = router.into_make_service_with_connect_info::<https::Peer>();
    let served: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match https {
        Some(config) => Box::pin(
            axum::serve(https::TlsListener::start(listener, config), app)
                .with_graceful_shutdown(stopping)
                .into_future(),
        ),
        None => Box::pin(
            axum::serve(Shared(listener), app)
                .with_graceful_shutdown(stopping)
                .into_future(),
        ),
    };
    let drained = async move {
        let _ = stopped.wait_for(|s| *s).await;
        tokio::time::sleep(crate::server::DRAIN).await;
    };
    tokio::select! {
        result = served => if let Err(e) = result {
            tracing::error!("dashboard: {e}");
        },
        () = drained => tracing::info!("dashboard: open requests cut after {:?}", crate::server::DRAIN),
    }
}

/// The listener behind an Arc: a standby that becomes the leader serves the same socket.
struct Shared(Arc<TcpListener>);

impl axum::serve::Listener for Shared {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    // Server-sent events are small writes: without this, Nagle's algorithm
                    // holds one back until the browser acknowledges the last.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!("dashboard: TCP_NODELAY: {e}");
                    }
                    return (stream, addr);
                }
                // Out of descriptors or an aborted handshake: wait a little, as axum's own does.
                Err(e) => {
                    tracing::warn!("dashboard accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
