//! Node networking, as a CNI bridge plugin gives it: a bridge per node holding the pod CIDR's
//! gateway, one veth and netns per container with an address from a persisted IPAM, routes to
//! other nodes' pod CIDRs, and an nf_tables table for masquerade and published ports.
//!
//! Everything may happen in a netns other than the agent's own (`NetConfig::host_netns`); the
//! agent's threads never change namespace: netlink sockets, sysctl files and `nft` are opened
//! or started from short-lived threads or children that join the node netns first.

mod error;
mod link;
mod nft;
mod ns;
mod services;
mod state;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use berth_proto::v1::{PodRoute, PortMapping, Protocol, ServiceSet};
use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

pub use error::NetError;
pub use services::{ServicesOutcome, services_table_name};
use state::{Proto, Published, State, Store};

/// How one node's network is laid out.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Names the nft table (`berth_<node>`) and the bridge (`bb-<node>` or `bb-<hash>`).
    pub node_name: String,
    /// This node's pod addresses; the first host address is the gateway, on the bridge.
    pub pod_cidr: Ipv4Net,
    /// The netns holding the node's network; None: the agent's own.
    pub host_netns: Option<PathBuf>,
    /// IPAM leases and port reservations (`DATA/agent/net`).
    pub state_dir: PathBuf,
    /// One bind-mounted netns file per container (`DATA/agent/netns`).
    pub netns_dir: PathBuf,
}

/// A container's place on the node network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The container's netns file, for the runtime's `path` of the network namespace.
    pub netns: PathBuf,
    /// The container's address on eth0.
    pub ip: Ipv4Addr,
}

/// The node's network, set up; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct NodeNetwork {
    cfg: NetConfig,
    bridge: String,
    gateway: Ipv4Addr,
    table: nft::Table,
    store: Store,
    services: services::Balancer,
}

/// The first `n` hex digits of sha256(`s`): short, stable names from arbitrary strings.
fn short_hash(s: &str, n: usize) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..n].to_owned()
}

/// The bridge of node `node`: `bb-<node>` when the name is short and tame, else a hash
/// (IFNAMSIZ leaves 15 bytes).
pub fn bridge_name(node: &str) -> String {
    let tame = node
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if tame && !node.is_empty() && node.len() <= 12 {
        format!("bb-{node}")
    } else {
        format!("bb-{}", short_hash(node, 12))
    }
}

/// The nft table of node `node`: `berth_<node>`, with a hash appended when characters had to
/// be replaced (so two names never map to one table).
pub fn table_name(node: &str) -> String {
    let clean: String = node
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if clean == node {
        format!("berth_{clean}")
    } else {
        format!("berth_{clean}_{}", short_hash(node, 8))
    }
}

/// The node-side veth of container `id`: derived from the id alone, so a detach after a crash
/// finds it without any state.
pub fn host_veth_name(id: &str) -> String {
    format!("bv{}", short_hash(id, 10))
}

/// The container-side veth before it moves into the container netns and becomes eth0.
fn peer_veth_name(id: &str) -> String {
    format!("bp{}", short_hash(id, 10))
}

/// Ids name netns files, so they must be plain file names.
fn validate_id(id: &str) -> Result<(), NetError> {
    if crate::layout::is_plain_id(id) {
        Ok(())
    } else {
        Err(NetError::InvalidId { id: id.to_owned() })
    }
}

/// The port mappings of `id` checked and converted; a host port listed twice is refused.
fn published(id: &str, ports: &[PortMapping]) -> Result<Vec<Published>, NetError> {
    let invalid = |reason: String| NetError::InvalidPort {
        id: id.to_owned(),
        reason,
    };
    let mut out: Vec<Published> = Vec::with_capacity(ports.len());
    // A port without a host port is only exposed (reachable at the container's address),
    // not published.
    for p in ports.iter().filter(|p| p.host_port != 0) {
        let port = |n: u32| u16::try_from(n).ok().filter(|n| *n != 0);
        let (Some(host_port), Some(container_port)) = (port(p.host_port), port(p.container_port))
        else {
            return Err(invalid(format!(
                "{} -> {}: ports must be 1-65535",
                p.host_port, p.container_port
            )));
        };
        let proto = match Protocol::try_from(p.protocol) {
            Ok(Protocol::Tcp) => Proto::Tcp,
            Ok(Protocol::Udp) => Proto::Udp,
            Err(_) => return Err(invalid(format!("unknown protocol {}", p.protocol))),
        };
        if out
            .iter()
            .any(|o| o.host_port == host_port && o.proto == proto)
        {
            return Err(invalid(format!(
                "host port {host_port}/{} listed twice",
                proto.name()
            )));
        }
        out.push(Published {
            host_port,
            container_port,
            proto,
        });
    }
    Ok(out)
}

/// Fails with `PortInUse` if a process in the netns at `ns` holds one of `ports` (found by
/// trying to bind each on 0.0.0.0 from a thread in that netns). Blocking.
fn probe_host_ports(ns: Option<&Path>, ports: Vec<(u16, Proto)>) -> Result<(), NetError> {
    if ports.is_empty() {
        return Ok(());
    }
    let where_ = ns.unwrap_or(Path::new("(own netns)")).to_path_buf();
    ns::run_in(ns, move || {
        for (port, proto) in ports {
            let bound = match proto {
                Proto::Tcp => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map(drop),
                Proto::Udp => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).map(drop),
            };
            match bound {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(NetError::PortInUse {
                        port,
                        protocol: proto.name(),
                        holder: "a process on the node".into(),
                    });
                }
                Err(e) => return Err(NetError::io("probe a host port in", &where_, e)),
            }
        }
        Ok(())
    })
}

/// Checks `wanted` against other containers' reservations in `st`, then probes the ports `id`
/// does not hold yet. Blocking.
fn check_against(
    st: &State,
    ns: Option<&Path>,
    id: &str,
    wanted: &[Published],
) -> Result<(), NetError> {
    for p in wanted {
        if let Some(holder) = st.port_holder(id, p.host_port, p.proto) {
            return Err(NetError::PortInUse {
                port: p.host_port,
                protocol: p.proto.name(),
                holder: format!("container {holder}"),
            });
        }
    }
    let held = st.ports.get(id).cloned().unwrap_or_default();
    let fresh = wanted
        .iter()
        .filter(|p| {
            !held
                .iter()
                .any(|h| h.host_port == p.host_port && h.proto == p.proto)
        })
        .map(|p| (p.host_port, p.proto))
        .collect();
    probe_host_ports(ns, fresh)
}

/// Runs blocking `f` off the async workers, passing panics on.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(NetError::io(
            "run blocking network task",
            "(runtime)",
            std::io::Error::other(e.to_string()),
        )),
    }
}

impl NodeNetwork {
    /// Idempotent: the bridge up with the gateway address, ip_forward=1 and route_localnet=1 on
    /// the bridge in the node netns, and the nft table (masquerade, published ports) rebuilt
    /// from the persisted state.
    pub async fn setup(cfg: NetConfig) -> Result<NodeNetwork, NetError> {
        if cfg.node_name.is_empty() {
            return Err(NetError::InvalidConfig("empty node name".into()));
        }
        let pod_cidr = cfg.pod_cidr.trunc();
        if pod_cidr.prefix_len() > 30 {
            return Err(NetError::InvalidConfig(format!(
                "pod CIDR {pod_cidr} leaves no address besides the gateway"
            )));
        }
        let gateway = pod_cidr.hosts().next().ok_or_else(|| {
            NetError::InvalidConfig(format!("pod CIDR {pod_cidr} has no host address"))
        })?;
        std::fs::create_dir_all(&cfg.netns_dir)
            .map_err(|e| NetError::io("create netns dir", &cfg.netns_dir, e))?;
        let store = Store::open(&cfg.state_dir)?;
        let bridge = bridge_name(&cfg.node_name);
        let table = nft::Table {
            name: table_name(&cfg.node_name),
            bridge: bridge.clone(),
            pod_cidr,
        };
        let services = services::Balancer::new(&cfg.node_name, cfg.host_netns.clone());
        let net = NodeNetwork {
            cfg: NetConfig { pod_cidr, ..cfg },
            bridge,
            gateway,
            table,
            store,
            services,
        };

        let h = link::connect(net.node_ns()).await?;
        // A locally administered unicast MAC derived from the node name: stable across restarts.
        let hash = Sha256::digest(net.cfg.node_name.as_bytes());
        let mac = [0x02, hash[0], hash[1], hash[2], hash[3], hash[4]];
        link::ensure_bridge(&h, &net.bridge, mac, gateway, pod_cidr.prefix_len()).await?;

        let bridge = net.bridge.clone();
        ns::run_in_async(net.node_ns(), move || {
            ns::write_sysctl("net/ipv4/ip_forward", "1")?;
            // 127.0.0.1:HOSTPORT is DNATed to a container: the packet leaves through the bridge
            // with a loopback source (masqueraded in postrouting), which the kernel drops as
            // martian unless route_localnet is on for that interface.
            let key = format!("net/ipv4/conf/{bridge}/route_localnet");
            if !ns::write_sysctl(&key, "1")? {
                return Err(NetError::io(
                    "find sysctl",
                    Path::new("/proc/sys").join(&key),
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
            // With br_netfilter loaded this defaults to 1 in every netns and ORs with the
            // bridge's own (off) setting: bridged pod-to-pod frames would then pass the IP
            // forward hooks, where a foreign DROP policy silently kills them.
            ns::write_sysctl("net/bridge/bridge-nf-call-iptables", "0")?;
            Ok(())
        })
        .await?;
        net.update(|_| Ok(())).await?;
        Ok(net)
    }

    fn node_ns(&self) -> Option<&Path> {
        self.cfg.host_netns.as_deref()
    }

    /// Changes the state under its lock and reloads the nft table from the result; nothing
    /// is saved if either fails.
    async fn update<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, NetError> + Send + 'static,
    ) -> Result<T, NetError> {
        let store = self.store.clone();
        let table = self.table.clone();
        let ns = self.cfg.host_netns.clone();
        blocking(move || {
            store.update(|st| {
                let out = f(st)?;
                table.apply(ns.as_deref(), &table.render(st))?;
                Ok(out)
            })
        })
        .await
    }

    /// The bridge's address, the containers' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// This node's pod CIDR (normalized to its network address).
    pub fn pod_cidr(&self) -> Ipv4Net {
        self.cfg.pod_cidr
    }

    /// The address leased to container `id`, if any (None also when the state is unreadable).
    pub fn ip_of(&self, id: &str) -> Option<Ipv4Addr> {
        self.store.read().ok()?.leases.get(id).copied()
    }

    /// The node bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The node's nft table (family ip).
    pub fn table(&self) -> &str {
        &self.table.name
    }

    /// The service load balancer's nft table (family ip).
    pub fn services_table(&self) -> &str {
        self.services.table()
    }

    /// Programs the service load balancer from `set` in one nft transaction, unless it is
    /// older than the set applied this session; flushes the conntrack entries of UDP
    /// endpoints that left. A set with an invalid service is refused whole.
    pub async fn apply_services(&self, set: &ServiceSet) -> Result<ServicesOutcome, NetError> {
        self.services.apply(set).await
    }

    /// The ServiceSet generation applied last this session (0: none).
    pub fn applied_service_generation(&self) -> u64 {
        self.services.generation()
    }

    /// A new scheduler session numbers its sets afresh; the programmed rules stay.
    pub fn reset_service_generation(&self) {
        self.services.reset_generation();
    }

    /// UDP and TCP sockets bound to `port` on the gateway address, made in the node netns (a
    /// socket stays in the netns it was made in): the node DNS server's listeners.
    pub async fn bind_gateway(&self, port: u16) -> Result<(UdpSocket, TcpListener), NetError> {
        let addr = std::net::SocketAddr::from((self.gateway, port));
        let ns = self.cfg.host_netns.clone();
        let where_ = ns.clone().unwrap_or_else(|| PathBuf::from("(own netns)"));
        ns::run_in_async(ns.as_deref(), move || {
            let bind = |e| NetError::io("bind the gateway address in", where_.clone(), e);
            Ok((
                UdpSocket::bind(addr).map_err(bind)?,
                TcpListener::bind(addr).map_err(bind)?,
            ))
        })
        .await
    }

    /// The netns file container `id` gets.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        ns::netns_path(&self.cfg.netns_dir, id)
    }

    /// Idempotent for one id: the container's netns file, a veth (node end on the bridge,
    /// the other end eth0 in the container with its leased address), lo up, the default route
    /// via the gateway, and `ports` published. On error everything this call added is undone.
    pub async fn attach(&self, id: &str, ports: &[PortMapping]) -> Result<Attachment, NetError> {
        validate_id(id)?;
        let wanted = published(id, ports)?;
        let (cidr, gateway, ns) = (self.cfg.pod_cidr, self.gateway, self.cfg.host_netns.clone());
        let owner = id.to_owned();
        let (ip, prev_lease, prev_ports) = self
            .update(move |st| {
                check_against(st, ns.as_deref(), &owner, &wanted)?;
                let prev_lease = st.leases.get(&owner).copied();
                let prev_ports = st.ports.get(&owner).cloned();
                let ip = st.lease(&owner, cidr, gateway)?;
                if wanted.is_empty() {
                    st.ports.remove(&owner);
                } else {
                    st.ports.insert(owner, wanted);
                }
                Ok((ip, prev_lease, prev_ports))
            })
            .await?;

        let netns = self.netns_path(id);
        let mut created_netns = false;
        let plumbed = self.plumb(id, ip, &netns, &mut created_netns).await;
        let Err(err) = plumbed else {
            return Ok(Attachment { netns, ip });
        };
        tracing::warn!(id, error = %err, "attach failed, undoing it");
        if prev_lease.is_none() {
            // Nothing of this container existed before: remove every piece, as detach does,
            // but leave a netns file this call did not create.
            if let Err(e) = self.unplumb(id, created_netns).await {
                tracing::warn!(id, error = %e, "undoing a failed attach");
            }
        }
        let owner = id.to_owned();
        let undo = self
            .update(move |st| {
                match prev_ports {
                    Some(p) => st.ports.insert(owner.clone(), p),
                    None => st.ports.remove(&owner),
                };
                if prev_lease.is_none() {
                    st.leases.remove(&owner);
                }
                Ok(())
            })
            .await;
        if let Err(e) = undo {
            tracing::warn!(id, error = %e, "undoing the leases of a failed attach");
        }
        Err(err)
    }

    /// The links and netns of an attach, each step skipped when already done.
    async fn plumb(
        &self,
        id: &str,
        ip: Ipv4Addr,
        netns: &Path,
        created_netns: &mut bool,
    ) -> Result<(), NetError> {
        let target = netns.to_path_buf();
        *created_netns = blocking(move || ns::create_netns_file(&target)).await?;
        let h = link::connect(self.node_ns()).await?;
        let hc = link::connect(Some(netns)).await?;
        let (host, peer) = (host_veth_name(id), peer_veth_name(id));
        let bridge_idx = link::index(&h, &self.bridge).await?.ok_or_else(|| {
            NetError::netlink(
                format!("bridge {} is missing (setup not run?)", self.bridge),
                rtnetlink::Error::RequestFailed,
            )
        })?;
        let host_idx = link::index(&h, &host).await?;
        let eth0 = link::index(&hc, "eth0").await?;
        match (host_idx, eth0) {
            (Some(idx), Some(_)) => link::attach_up(&h, idx, &host, bridge_idx).await?,
            _ => {
                // Half a pair from a crash: start over (deleting one end removes both).
                link::delete(&h, &host).await?;
                link::delete(&h, &peer).await?;
                link::delete(&hc, "eth0").await?;
                link::create_veth(&h, &host, &peer, bridge_idx, netns).await?;
            }
        }
        link::configure_container(&hc, &peer, ip, self.cfg.pod_cidr.prefix_len(), self.gateway)
            .await
    }

    /// Removes the veth and (if `netns_too`) the netns file of `id`.
    async fn unplumb(&self, id: &str, netns_too: bool) -> Result<(), NetError> {
        let h = link::connect(self.node_ns()).await?;
        link::delete(&h, &host_veth_name(id)).await?;
        link::delete(&h, &peer_veth_name(id)).await?;
        if netns_too {
            let path = self.netns_path(id);
            blocking(move || ns::remove_netns_file(&path)).await?;
        }
        Ok(())
    }

    /// Idempotent, and fine with any piece already gone (after a crash): removes the port
    /// rules, the node-side veth, the netns file and its mount, then frees the lease.
    pub async fn detach(&self, id: &str) -> Result<(), NetError> {
        validate_id(id)?;
        let owner = id.to_owned();
        self.update(move |st| {
            st.ports.remove(&owner);
            Ok(())
        })
        .await?;
        self.unplumb(id, true).await?;
        // Freed last, so the address is never handed out while its old veth may still exist.
        let owner = id.to_owned();
        self.update(move |st| {
            st.leases.remove(&owner);
            Ok(())
        })
        .await
    }

    /// Makes the routes to other nodes' pod CIDRs exactly `routes` (this node's own entry, if
    /// present, is skipped); pod traffic to those CIDRs keeps its source address.
    pub async fn set_routes(&self, routes: &[PodRoute]) -> Result<(), NetError> {
        let mut want: BTreeMap<Ipv4Net, Ipv4Addr> = BTreeMap::new();
        for r in routes {
            let bad = |reason: String| NetError::InvalidRoute {
                node: r.node_name.clone(),
                reason,
            };
            let cidr: Ipv4Net = r
                .pod_cidr
                .parse()
                .map_err(|e| bad(format!("pod CIDR {:?}: {e}", r.pod_cidr)))?;
            let cidr = cidr.trunc();
            if r.node_name == self.cfg.node_name || cidr == self.cfg.pod_cidr {
                continue;
            }
            let via: Ipv4Addr = r
                .node_address
                .parse()
                .map_err(|e| bad(format!("node address {:?}: {e}", r.node_address)))?;
            want.insert(cidr, via);
        }
        let h = link::connect(self.node_ns()).await?;
        for route in link::own_routes(&h).await? {
            if want.get(&route.dest) != route.via.as_ref() {
                link::delete_route(&h, route).await?;
            }
        }
        for (dest, via) in &want {
            link::replace_route(&h, *dest, *via).await?;
        }
        let remote: Vec<String> = want.into_keys().map(|c| c.to_string()).collect();
        self.update(move |st| {
            st.remote_pods = remote;
            Ok(())
        })
        .await
    }

    /// Containers holding a lease or a netns file, sorted: what the agent compares with the
    /// containers it knows to sweep leftovers.
    pub fn attached(&self) -> Result<Vec<String>, NetError> {
        let mut ids: Vec<String> = self.store.read()?.leases.into_keys().collect();
        let dir = &self.cfg.netns_dir;
        let entries = std::fs::read_dir(dir).map_err(|e| NetError::io("list", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| NetError::io("list", dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                ids.push(name.to_owned());
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Whether container `id` may publish `ports`: none reserved by another container, none
    /// bound by a process in the node netns (the ones `id` already holds are not probed).
    /// Blocks briefly: one bind per port not yet held, on a thread in the node netns.
    pub fn check_ports(&self, id: &str, ports: &[PortMapping]) -> Result<(), NetError> {
        validate_id(id)?;
        let wanted = published(id, ports)?;
        let st = self.store.read()?;
        check_against(&st, self.node_ns(), id, &wanted)
    }

    /// Removes the service load balancer's table (present or not).
    pub async fn remove_services(&self) -> Result<(), NetError> {
        self.services.remove().await
    }

    /// Removes the nft tables, the bridge and this module's routes. Containers must be
    /// detached first.
    pub async fn teardown(&self) -> Result<(), NetError> {
        let st = self.store.read()?;
        if !st.leases.is_empty() {
            return Err(NetError::StillAttached {
                ids: st.leases.into_keys().collect(),
            });
        }
        let table = self.table.clone();
        let ns = self.cfg.host_netns.clone();
        blocking(move || table.apply(ns.as_deref(), &table.render_delete())).await?;
        self.remove_services().await?;
        let h = link::connect(self.node_ns()).await?;
        for route in link::own_routes(&h).await? {
            link::delete_route(&h, route).await?;
        }
        link::delete(&h, &self.bridge).await?;
        let store = self.store.clone();
        blocking(move || {
            store.update(|st| {
                st.remote_pods.clear();
                Ok(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_are_stable() {
        assert_eq!(bridge_name("n1"), "bb-n1");
        let long = bridge_name("a-very-long-node-name.example");
        assert!(long.len() <= 15 && long.starts_with("bb-"), "{long}");
        assert_eq!(long, bridge_name("a-very-long-node-name.example"));
        assert_eq!(host_veth_name("abc").len(), 12);
        assert_ne!(host_veth_name("abc"), host_veth_name("abd"));
        assert_eq!(table_name("n1"), "berth_n1");
        assert!(table_name("n-1").starts_with("berth_n_1_"));
    }

    #[test]
    fn ids_must_be_file_names() {
        for bad in ["", ".", "..", "a/b", ".hidden", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        validate_id("web-1.abc_2").unwrap();
    }

    #[test]
    fn port_mappings_are_checked() {
        let pm = |h, c, p| PortMapping {
            host_port: h,
            container_port: c,
            protocol: p,
        };
        // Exposed only: nothing to publish.
        assert!(published("a", &[pm(0, 80, 0)]).unwrap().is_empty());
        assert!(published("a", &[pm(80, 0, 0)]).is_err());
        assert!(published("a", &[pm(70000, 80, 0)]).is_err());
        assert!(published("a", &[pm(80, 80, 7)]).is_err());
        assert!(published("a", &[pm(80, 80, 0), pm(80, 81, 0)]).is_err());
        let ok = published("a", &[pm(80, 80, 0), pm(80, 81, 1)]).unwrap();
        assert_eq!(ok.len(), 2);
    }
}
