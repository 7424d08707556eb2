//! Several schedulers on one etcd: one leads (runs the control loop and the agents' sessions),
//! the others stand by on their own listeners, forwarding DeploymentService calls to the
//! leader and sending agents to it, and campaign to take over when the leader goes.
//!
//! A leader that loses its lease stops leading at once and drops everything it held in memory:
//! it cannot know what another leader did meanwhile. It stands by again and, if it wins again,
//! starts afresh from the store.

pub mod election;
pub mod standby;

use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1::config_service_server::ConfigServiceServer;
use berth_proto::v1::deployment_service_server::DeploymentServiceServer;
use berth_proto::v1::environment_service_server::EnvironmentServiceServer;
use berth_proto::v1::event_service_server::EventServiceServer;
use berth_proto::v1::node_service_server::NodeServiceServer;
use berth_proto::v1::release_service_server::ReleaseServiceServer;
use berth_proto::v1::secret_service_server::SecretServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use berth_proto::v1::auth_service_server::AuthServiceServer;

use crate::auth::Security;
use crate::error::SchedError;
use crate::grpc::auth::TokenApi;
use crate::grpc::deployments::DeployApi;
use crate::grpc::environments::EnvironmentApi;
use crate::grpc::events::EventApi;
use crate::grpc::files::FilesApi;
use crate::grpc::nodes::NodeApi;
use crate::grpc::releases::ReleaseApi;
use crate::server::{Config, incoming, serve_leader};
use crate::store::Store;
use crate::store::etcd::EtcdStore;
use election::Election;
use standby::{Forward, Redirect};

/// Serves as a standby until elected, then as the leader, until `shutdown` (then resigns). A
/// leader that loses its lease (etcd out of reach longer than the lease allows) drops all it
/// held in memory and stands by again: the store, fenced against it meanwhile, is the truth
/// it starts from when it wins again.
pub async fn run_ha(
    config: Config,
    store: EtcdStore,
    election: Arc<Election>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SchedError> {
    crate::server::check_config(&config)?;
    let _metrics = crate::metrics::spawn(&config)?;
    let listener = Arc::new(listener);
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    loop {
        let (standby_tx, standby_rx) = watch::channel(false);
        // A standby's dashboard sends visitors to the leader's.
        let dashboard = config.http_listener.clone().map(|http| {
            tokio::spawn(crate::dashboard::standby::serve(
                http,
                config.security.https(),
                Arc::new(store.clone()),
                election.clone(),
                standby_rx.clone(),
            ))
        });
        let standby = tokio::spawn(serve_standby(
            config.security.clone(),
            Arc::new(store.clone()),
            election.clone(),
            listener.clone(),
            stopped(standby_rx),
        ));
        let won = loop {
            tokio::select! {
                won = election.campaign() => match won {
                    Ok(leadership) => break Some(leadership),
                    Err(e) => tracing::warn!("campaigning: {e}; retrying"),
                },
                () = stopped(stop.clone()) => break None,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = stopped(stop.clone()) => break None,
            }
        };
        let _ = standby_tx.send(true);
        let _ = standby.await;
        // Its socket is the leader's dashboard's next.
        if let Some(dashboard) = dashboard {
            let _ = dashboard.await;
        }
        let Some(leadership) = won else {
            return Ok(());
        };
        let (key, revision) = leadership.fence();
        let fenced = Arc::new(store.fenced(key, revision));
        let mut lost = leadership.watch_lost();
        let mut stop_leader = stop.clone();
        let served = serve_leader(config.clone(), fenced, listener.clone(), async move {
            tokio::select! {
                _ = stop_leader.wait_for(|s| *s) => {}
                _ = lost.wait_for(|l| *l) => {}
            }
        })
        .await;
        if *stop.borrow() {
            election.resign(leadership).await;
            return served;
        }
        served?;
        tracing::error!(
            "lost the leadership (the etcd lease could not be kept alive): standing by again"
        );
    }
}

/// A standby's server: health, reflection, DeploymentService, ReleaseService and AuthService forwarded to
/// the leader, NodeService redirecting agents to it; with TLS, behind the same checks as the
/// leader's (the caller is authenticated here and forwarded by name and role).
async fn serve_standby(
    security: Security,
    store: Arc<dyn Store>,
    election: Arc<Election>,
    listener: Arc<TcpListener>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SchedError> {
    // Agents must go to the leader: this one does not serve them.
    tracing::info!(url = %election.url(), "standing by");
    let server = crate::server::with_health_and_reflection(
        security
            .server(store)?
            .add_service(Redirect::<NodeServiceServer<NodeApi>>::new(
                election.clone(),
            )),
        false,
    )
    .await?
    .add_service(Forward::<DeploymentServiceServer<DeployApi>>::new(
        election.clone(),
        security.clone(),
    ))
    .add_service(Forward::<ConfigServiceServer<FilesApi>>::new(
        election.clone(),
        security.clone(),
    ))
    .add_service(Forward::<SecretServiceServer<FilesApi>>::new(
        election.clone(),
        security.clone(),
    ))
    .add_service(Forward::<EnvironmentServiceServer<EnvironmentApi>>::new(
        election.clone(),
        security.clone(),
    ))
    .add_service(Forward::<ReleaseServiceServer<ReleaseApi>>::new(
        election.clone(),
        security.clone(),
    ))
    // The event stream is the leader's (its writer feeds the live tail).
    .add_service(Forward::<EventServiceServer<EventApi>>::new(
        election.clone(),
        security.clone(),
    ))
    .add_service(Forward::<AuthServiceServer<TokenApi>>::new(
        election, security,
    ));
    crate::server::serve_until(
        |drained| server.serve_with_incoming_shutdown(incoming(listener), drained),
        stop,
    )
    .await
}
