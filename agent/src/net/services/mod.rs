//! The node's service load balancer, as kube-proxy's nftables mode builds it: a table of its
//! own (`berth_svc_<node>`) whose verdict map sends `virtual IP . protocol . port` to a chain
//! per service port, which picks a ready endpoint at random and DNATs to it. A ServiceSet is
//! applied whole in one nft transaction; UDP flows to endpoints that left are flushed from
//! conntrack so they move to live ones.

mod conntrack;
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use berth_proto::v1::{Protocol, ServiceSet};

use super::NetError;
use super::state::Proto;

/// The packet mark that asks for masquerade (hairpin: an endpoint reaching itself through
/// its service). The bit kube-proxy uses, so a node running both agrees on its meaning.
pub(crate) const HAIRPIN_MARK: u32 = 0x4000;

/// One port of a service, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SvcPort {
    pub proto: Proto,
    pub port: u16,
    pub target: u16,
}

/// One service, checked: endpoints distinct and sorted, so equal sets render equally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Svc {
    pub name: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<SvcPort>,
    pub endpoints: Vec<Ipv4Addr>,
}

/// The nft table of node `node`'s load balancer: `berth_svc_<node>`, cleaned the way the
/// node's own table is.
pub fn services_table_name(node: &str) -> String {
    let node_table = super::table_name(node);
    format!("berth_svc_{}", &node_table["berth_".len()..])
}

/// Whether `name` is a DNS label (RFC 1123): deployment names are DNS names now, and chain
/// names are made from them.
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Checks and converts one service; errors name the service and the field.
fn parse_service(s: &berth_proto::v1::Service) -> Result<Svc, NetError> {
    let bad = |reason: String| NetError::InvalidService {
        service: s.name.clone(),
        reason,
    };
    // A deployment's name, qualified with its environment by the scheduler outside the
    // default one (`hello.staging`): DNS labels joined by '.'.
    if !s.name.split('.').all(is_dns_label) {
        return Err(bad(
            "name: not DNS labels (a-z, 0-9, '-', at most 63) joined by '.'".into(),
        ));
    }
    let vip: Ipv4Addr = s
        .virtual_ip
        .parse()
        .map_err(|e| bad(format!("virtual_ip {:?}: {e}", s.virtual_ip)))?;
    let mut ports = Vec::with_capacity(s.ports.len());
    for p in &s.ports {
        let port = |what: &str, n: u32| {
            u16::try_from(n)
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| bad(format!("ports: {what} {n} is not 1-65535")))
        };
        let proto = match Protocol::try_from(p.protocol) {
            Ok(Protocol::Tcp) => Proto::Tcp,
            Ok(Protocol::Udp) => Proto::Udp,
            Err(_) => return Err(bad(format!("ports: unknown protocol {}", p.protocol))),
        };
        let sp = SvcPort {
            proto,
            port: port("port", p.port)?,
            target: port("target", p.target)?,
        };
        if ports
            .iter()
            .any(|o: &SvcPort| o.port == sp.port && o.proto == sp.proto)
        {
            return Err(bad(format!(
                "ports: {}/{} listed twice",
                sp.port,
                proto.name()
            )));
        }
        ports.push(sp);
    }
    ports.sort();
    let mut endpoints = BTreeSet::new();
    for e in &s.endpoints {
        let ip: Ipv4Addr = e.ip.parse().map_err(|err| {
            bad(format!(
                "endpoint {} on {}: ip {:?}: {err}",
                e.container_id, e.node, e.ip
            ))
        })?;
        endpoints.insert(ip);
    }
    Ok(Svc {
        name: s.name.clone(),
        vip,
        ports,
        endpoints: endpoints.into_iter().collect(),
    })
}

/// Checks a whole set: every service valid, no name and no `VIP:port/proto` used twice.
pub(crate) fn parse_set(set: &ServiceSet) -> Result<Vec<Svc>, NetError> {
    let mut out: Vec<Svc> = Vec::with_capacity(set.services.len());
    let mut names = BTreeSet::new();
    let mut keys = BTreeMap::new();
    for s in &set.services {
        let svc = parse_service(s)?;
        if !names.insert(svc.name.clone()) {
            return Err(NetError::InvalidService {
                service: svc.name,
                reason: "name: listed twice in the set".into(),
            });
        }
        for p in &svc.ports {
            if let Some(other) = keys.insert((svc.vip, p.proto, p.port), svc.name.clone()) {
                return Err(NetError::InvalidService {
                    service: svc.name,
                    reason: format!(
                        "virtual_ip {}:{}/{} is also service {other}'s",
                        svc.vip,
                        p.port,
                        p.proto.name()
                    ),
                });
            }
        }
        out.push(svc);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The services the balancer programmed last: the base of the next set's incremental
/// transaction and of its conntrack diff.
#[derive(Debug, Default)]
struct Applied {
    services: Vec<Svc>,
    /// Whether this process built the table, so that it holds exactly `services`. Until it
    /// has (a fresh start, a table left by an earlier agent), a set rebuilds it whole.
    programmed: bool,
}

/// What applying one ServiceSet did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicesOutcome {
    /// Programmed: the generation to acknowledge.
    Applied {
        /// The set's generation.
        generation: u64,
        /// UDP endpoint flows flushed from conntrack.
        flushed: usize,
        /// Whether the table was rebuilt whole (the first set, or a failed incremental
        /// update) rather than changed where the set differs.
        rebuilt: bool,
    },
    /// Older than the set applied already: nothing changed.
    Stale {
        /// The generation applied already.
        applied: u64,
    },
}

/// The node's load balancer: its table, and the last set applied. Applies are serialized.
#[derive(Debug)]
pub(crate) struct Balancer {
    table: String,
    ns: Option<PathBuf>,
    applied: tokio::sync::Mutex<Applied>,
    generation: std::sync::atomic::AtomicU64,
}

impl Balancer {
    pub(crate) fn new(node: &str, ns: Option<PathBuf>) -> Balancer {
        Balancer {
            table: services_table_name(node),
            ns,
            applied: tokio::sync::Mutex::new(Applied::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// The generation applied last (0: none this session).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A new session may number its sets afresh; the programmed rules stay.
    pub(crate) fn reset_generation(&self) {
        self.generation
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// Programs `set` in one nft transaction (the table flushed and refilled), unless it is
    /// older than the one applied; then flushes the conntrack entries of UDP endpoints that
    /// left. Idempotent: the same set again changes nothing but is acknowledged again.
    pub(crate) async fn apply(&self, set: &ServiceSet) -> Result<ServicesOutcome, NetError> {
        let services = parse_set(set)?;
        let mut applied = self.applied.lock().await;
        let current = self.generation();
        if set.generation != 0 && set.generation < current {
            return Ok(ServicesOutcome::Stale { applied: current });
        }
        let rebuilt = self.program(&applied, &services).await?;
        let gone = conntrack::departed_udp(&applied.services, &services);
        // A virtual IP that left (its deployment was deleted) keeps no flow: TCP ones would
        // otherwise linger in conntrack for minutes after the service is gone.
        let kept: BTreeSet<Ipv4Addr> = services.iter().map(|s| s.vip).collect();
        let left: BTreeSet<Ipv4Addr> = applied
            .services
            .iter()
            .map(|s| s.vip)
            .filter(|vip| !kept.contains(vip))
            .collect();
        applied.services = services;
        applied.programmed = true;
        self.generation
            .store(set.generation, std::sync::atomic::Ordering::SeqCst);
        drop(applied);
        let ns = self.ns.clone();
        let flushed = super::blocking(move || {
            conntrack::flush_vips(ns.as_deref(), &left);
            Ok(conntrack::flush(ns.as_deref(), &gone))
        })
        .await?;
        Ok(ServicesOutcome::Applied {
            generation: set.generation,
            flushed,
            rebuilt,
        })
    }

    /// One nft transaction from what `applied` holds to `services`: only the changed service
    /// ports when the table is known to hold `applied`, else (or if that fails: someone
    /// changed the table) the whole table rebuilt.
    /// Returns whether the table was rebuilt.
    async fn program(&self, applied: &Applied, services: &[Svc]) -> Result<bool, NetError> {
        let (ns, table) = (self.ns.clone(), self.table.clone());
        if applied.programmed {
            let Some(batch) = render::changes(&table, &applied.services, services) else {
                return Ok(false);
            };
            let (ns, table) = (ns.clone(), table.clone());
            let done = super::blocking(move || render::load(ns.as_deref(), &table, &batch)).await;
            match done {
                Ok(()) => return Ok(false),
                Err(e) => {
                    tracing::warn!(table = %self.table, "incremental update failed, rebuilding: {e}")
                }
            }
        }
        let batch = render::ruleset(&table, services);
        super::blocking(move || render::load(ns.as_deref(), &table, &batch)).await?;
        Ok(true)
    }

    /// Removes the table, present or not, and the conntrack flows to the virtual IPs it
    /// balanced; forgets what was applied.
    pub(crate) async fn remove(&self) -> Result<(), NetError> {
        let mut applied = self.applied.lock().await;
        let batch = render::delete(&self.table);
        let (ns, table) = (self.ns.clone(), self.table.clone());
        let vips: BTreeSet<Ipv4Addr> = applied.services.iter().map(|s| s.vip).collect();
        super::blocking(move || {
            render::load(ns.as_deref(), &table, &batch)?;
            conntrack::flush_vips(ns.as_deref(), &vips);
            Ok(())
        })
        .await?;
        *applied = Applied::default();
        self.generation
            .store(0, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::{Endpoint, Service, ServicePort};

    fn svc(name: &str, vip: &str, ports: &[(u32, u32, Protocol)], eps: &[&str]) -> Service {
        Service {
            name: name.into(),
            virtual_ip: vip.into(),
            ports: ports
                .iter()
                .map(|(port, target, p)| ServicePort {
                    name: String::new(),
                    port: *port,
                    target: *target,
                    protocol: *p as i32,
                })
                .collect(),
            endpoints: eps
                .iter()
                .map(|ip| Endpoint {
                    container_id: format!("c-{ip}"),
                    node: "n1".into(),
                    ip: (*ip).into(),
                })
                .collect(),
        }
    }

    fn set(services: Vec<Service>) -> ServiceSet {
        ServiceSet {
            generation: 1,
            services,
        }
    }

    fn refused(s: Service, field: &str) {
        let err = parse_set(&set(vec![s])).unwrap_err().to_string();
        assert!(err.contains(field), "{err} should name {field}");
    }

    #[test]
    fn bad_services_are_refused_naming_the_field() {
        use Protocol::{Tcp, Udp};
        refused(svc("Web", "10.96.0.1", &[], &[]), "name");
        refused(svc("-web", "10.96.0.1", &[], &[]), "name");
        refused(svc("web.", "10.96.0.1", &[], &[]), "name");
        refused(svc("web..x", "10.96.0.1", &[], &[]), "name");
        // Issue 16: a service in an environment other than the default is `NAME.ENV`.
        parse_set(&set(vec![svc("web.staging", "10.96.0.2", &[], &[])])).unwrap();
        refused(svc("web", "10.96.0", &[], &[]), "virtual_ip");
        refused(svc("web", "10.96.0.1", &[(0, 80, Tcp)], &[]), "port 0");
        refused(svc("web", "10.96.0.1", &[(80, 70000, Tcp)], &[]), "target");
        refused(
            svc("web", "10.96.0.1", &[(80, 80, Tcp), (80, 81, Tcp)], &[]),
            "listed twice",
        );
        let mut odd = svc("web", "10.96.0.1", &[(80, 80, Tcp)], &[]);
        odd.ports[0].protocol = 9;
        refused(odd, "unknown protocol");
        refused(svc("web", "10.96.0.1", &[], &["nope"]), "endpoint");
        // Same port on TCP and UDP is fine.
        parse_set(&set(vec![svc(
            "dns",
            "10.96.0.10",
            &[(53, 53, Tcp), (53, 53, Udp)],
            &["10.88.1.2", "10.88.1.2"],
        )]))
        .unwrap();
        let twice = parse_set(&set(vec![
            svc("a", "10.96.0.1", &[(80, 80, Tcp)], &[]),
            svc("b", "10.96.0.1", &[(80, 80, Tcp)], &[]),
        ]));
        assert!(twice.unwrap_err().to_string().contains("also service a"));
    }

    #[test]
    fn endpoints_are_distinct_and_sorted() {
        let got = parse_set(&set(vec![svc(
            "web",
            "10.96.0.1",
            &[(80, 8080, Protocol::Tcp)],
            &["10.88.1.3", "10.88.1.2", "10.88.1.3"],
        )]))
        .unwrap();
        assert_eq!(
            got[0].endpoints,
            [
                "10.88.1.2".parse::<Ipv4Addr>().unwrap(),
                "10.88.1.3".parse().unwrap()
            ]
        );
    }

    #[test]
    fn table_names_follow_the_node_table() {
        assert_eq!(services_table_name("n1"), "berth_svc_n1");
        assert!(services_table_name("n-1").starts_with("berth_svc_n_1_"));
    }
}
