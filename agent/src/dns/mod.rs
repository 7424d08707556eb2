//! The node's DNS server: answers service names from the scheduler's ServiceSet and forwards
//! every other name to the host's resolvers (hickory-server with a zone and a forwarder).
//!
//! `NAME.berth.` answers the service's virtual IP; `_PORT._tcp.NAME.berth.` (and `_udp`) an
//! SRV record for each service port, with the A record in the additional section; any other
//! name under `berth.` is NXDOMAIN. Everything carries a 5 s TTL, so a changed set is seen by
//! caching clients within seconds. Containers reach it through the resolv.conf the agent
//! writes into each bundle (nameserver = the bridge's gateway, `search berth`).

pub(crate) mod node;
mod upstream;
mod zone;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_proto::v1::{Service, ServiceSet};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, ZoneHandler};

pub use upstream::{host_upstreams, parse_upstreams};

/// The port the node's DNS server listens on (the gateway address, UDP and TCP).
pub const DNS_PORT: u16 = 53;
/// The TTL of every answer (and of NXDOMAIN, through the SOA minimum).
pub const TTL_SECS: u32 = 5;
/// The zone services live in: containers' resolv.conf searches it.
pub const DOMAIN: &str = "berth";
/// How long a TCP client may stay silent before the server closes its connection.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("service set: service {service:?}: {field}: {reason}")]
    InvalidService {
        service: String,
        field: &'static str,
        reason: String,
    },
    #[error("DNS upstream {text:?}: {reason}")]
    InvalidUpstream { text: String, reason: String },
    #[error("reading the host's resolvers from {path}: {reason}")]
    HostResolvers { path: String, reason: String },
    #[error("DNS zone: {0}")]
    Zone(String),
    #[error("DNS server: {0}")]
    Serve(String),
}

/// Cloneable handle on the node's DNS answers; `update` swaps them while the server runs.
#[derive(Clone)]
pub struct Dns {
    inner: Arc<Inner>,
}

struct Inner {
    /// Rebuilt on every update and swapped whole: a query sees one set or the next, never a mix.
    catalog: RwLock<Arc<Catalog>>,
    /// Shared by every catalog, so the forwarder's connections and cache survive updates.
    forwarder: Option<Arc<dyn ZoneHandler>>,
    /// The generation of the set answered from (0: none yet).
    generation: AtomicU64,
    /// What the current zone was built from: a set that differs only in endpoints (most
    /// updates: a replica turning Ready or leaving) answers the same, so it is not rebuilt.
    built_from: std::sync::Mutex<Option<Vec<Service>>>,
}

/// The part of `set` that DNS answers from (names, virtual IPs, ports; not endpoints),
/// sorted by name so that the order of the set does not matter.
fn answered(set: &ServiceSet) -> Vec<Service> {
    let mut services: Vec<Service> = set
        .services
        .iter()
        .map(|s| Service {
            endpoints: Vec::new(),
            ..s.clone()
        })
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    services
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("generation", &self.generation())
            .field("forwarding", &self.inner.forwarder.is_some())
            .finish()
    }
}

impl Dns {
    /// Answers nothing under `berth.` yet (NXDOMAIN) and forwards other names to `upstreams`
    /// (none: other names are refused).
    pub fn new(upstreams: &[SocketAddr]) -> Result<Self, DnsError> {
        let forwarder = if upstreams.is_empty() {
            None
        } else {
            let handler: Arc<dyn ZoneHandler> = Arc::new(upstream::forwarder(upstreams)?);
            Some(handler)
        };
        let this = Self {
            inner: Arc::new(Inner {
                catalog: RwLock::new(Arc::new(Catalog::new())),
                forwarder,
                generation: AtomicU64::new(0),
                built_from: std::sync::Mutex::new(None),
            }),
        };
        this.update(&ServiceSet::default())?;
        Ok(this)
    }

    /// Answers from `set` from now on. A set older than the one answered from is ignored (the
    /// stream may deliver a stale one after a reconnect); a bad set leaves the old answers.
    pub fn update(&self, set: &ServiceSet) -> Result<(), DnsError> {
        let view = answered(set);
        let mut built_from = self
            .inner
            .built_from
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if built_from.as_ref() == Some(&view) {
            // Endpoints changed only: the answers stand (rebuilding 5,000 services took
            // ~0.1 s, on the path from a replica turning Ready to it getting traffic).
            if set.generation >= self.generation() {
                self.inner
                    .generation
                    .store(set.generation, Ordering::Release);
            }
            return Ok(());
        }
        let zone = zone::build(set)?;
        let mut catalog = self
            .inner
            .catalog
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let current = self.generation();
        if set.generation < current {
            tracing::debug!(
                generation = set.generation,
                current,
                "ignoring an older service set"
            );
            return Ok(());
        }
        *catalog = Arc::new(self.catalog_with(zone));
        *built_from = Some(view);
        self.inner
            .generation
            .store(set.generation, Ordering::Release);
        Ok(())
    }

    /// A new scheduler session numbers its sets afresh; the answers stay until its first set.
    pub fn reset_generation(&self) {
        self.inner.generation.store(0, Ordering::Release);
    }

    /// The generation of the ServiceSet the answers come from.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    fn catalog_with(&self, zone: Arc<dyn ZoneHandler>) -> Catalog {
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&zone::origin()), vec![zone]);
        if let Some(forwarder) = &self.inner.forwarder {
            catalog.upsert(LowerName::new(&Name::root()), vec![forwarder.clone()]);
        }
        catalog
    }

    /// Serves queries on `udp` and `tcp` until `shutdown` resolves, then stops listening (both
    /// sockets are closed when this returns).
    pub async fn serve(
        &self,
        udp: tokio::net::UdpSocket,
        tcp: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DnsError> {
        let mut server = Server::new(Handler { dns: self.clone() });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
        let token = server.shutdown_token().clone();
        tokio::select! {
            () = shutdown => {}
            () = token.cancelled() => {}
        }
        server
            .shutdown_gracefully()
            .await
            .map_err(|e| DnsError::Serve(e.to_string()))
    }
}

/// What the hickory server calls: the current catalog answers.
struct Handler {
    dns: Dns,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        // Cloned out so the lock is not held across the (possibly forwarded) lookup.
        let catalog = self
            .dns
            .inner
            .catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// Bound std sockets (made wherever they must live, e.g. in the node netns) as the tokio
/// sockets [`Dns::serve`] takes.
pub fn to_tokio(
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), DnsError> {
    let serve = |e: std::io::Error| DnsError::Serve(format!("registering the sockets: {e}"));
    udp.set_nonblocking(true).map_err(serve)?;
    tcp.set_nonblocking(true).map_err(serve)?;
    Ok((
        tokio::net::UdpSocket::from_std(udp).map_err(serve)?,
        tokio::net::TcpListener::from_std(tcp).map_err(serve)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::{Endpoint, Protocol, ServicePort};

    fn set(generation: u64, vip: &str, endpoint: &str) -> ServiceSet {
        ServiceSet {
            generation,
            services: vec![Service {
                name: "hello".into(),
                virtual_ip: vip.into(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 80,
                    target: 8080,
                    protocol: Protocol::Tcp as i32,
                }],
                endpoints: vec![Endpoint {
                    container_id: "c1".into(),
                    node: "n1".into(),
                    ip: endpoint.into(),
                }],
            }],
        }
    }

    fn catalog(dns: &Dns) -> Arc<Catalog> {
        dns.inner.catalog.read().unwrap().clone()
    }

    #[test]
    fn an_endpoint_change_keeps_the_zone_and_takes_the_generation() {
        let dns = Dns::new(&[]).unwrap();
        dns.update(&set(1, "10.96.0.10", "10.88.1.2")).unwrap();
        let first = catalog(&dns);
        dns.update(&set(2, "10.96.0.10", "10.88.1.3")).unwrap();
        assert_eq!(dns.generation(), 2);
        assert!(
            Arc::ptr_eq(&first, &catalog(&dns)),
            "endpoints only: not rebuilt"
        );
        dns.update(&set(3, "10.96.0.11", "10.88.1.3")).unwrap();
        assert_eq!(dns.generation(), 3);
        let moved = catalog(&dns);
        assert!(!Arc::ptr_eq(&first, &moved), "a new virtual IP: rebuilt");
        // An older set is still ignored, whether it would rebuild or not.
        dns.update(&set(2, "10.96.0.10", "10.88.1.3")).unwrap();
        dns.update(&set(1, "10.96.0.11", "10.88.1.9")).unwrap();
        assert_eq!(dns.generation(), 3);
        assert!(Arc::ptr_eq(&moved, &catalog(&dns)));
    }
}
