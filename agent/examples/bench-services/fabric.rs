//! Two node netns joined by a veth link, each with the agent's node network (bridge, pod
//! routes, services table): a backend and a client container on node A, a backend and a
//! client on node B. Everything is removed when the fabric is dropped.

use std::net::Ipv4Addr;

use berth_agent::dns::Dns;
use berth_agent::net::{Attachment, NodeNetwork, ServicesOutcome};
use berth_proto::v1::{Endpoint, PodRoute, Protocol, Service, ServicePort, ServiceSet};

use crate::common::{Node, run};
use crate::traffic;

/// The measured service's virtual IP.
pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Port 80 of the VIP goes to HTTP on 8080; port 90 to the bulk sender on 9000.
pub(crate) const HTTP: (u16, u16) = (80, 8080);
pub(crate) const BULK: (u16, u16) = (90, 9000);

pub(crate) struct Fabric {
    // Fields drop in order: the networks' netns and state go with their Node.
    pub(crate) net_a: NodeNetwork,
    pub(crate) net_b: NodeNetwork,
    pub(crate) dns_a: Dns,
    pub(crate) dns_b: Dns,
    /// HTTP backend "b0" on node A (also the bulk sender), "r0" on node B.
    pub(crate) b0: Attachment,
    pub(crate) r0: Attachment,
    pub(crate) client_a: Attachment,
    pub(crate) client_b: Attachment,
    /// The node netns (their names: `ip netns exec`).
    pub(crate) a: Node,
    _b: Node,
}

/// Bytes each bulk transfer carries.
pub(crate) const BULK_BYTES: usize = 256 << 20;

impl Fabric {
    pub(crate) async fn new() -> anyhow::Result<Fabric> {
        let (a, b) = (Node::new(61), Node::new(62));
        let (va, vb) = (format!("bva{}", a.node_name), format!("bvb{}", b.node_name));
        run(&[
            "ip", "-n", &a.ns_name, "link", "add", &va, "type", "veth", "peer", "name", &vb,
            "netns", &b.ns_name,
        ]);
        for (node, link, addr) in [(&a, &va, "192.168.61.1/24"), (&b, &vb, "192.168.61.2/24")] {
            run(&["ip", "-n", &node.ns_name, "addr", "add", addr, "dev", link]);
            run(&["ip", "-n", &node.ns_name, "link", "set", link, "up"]);
        }
        let (net_a, net_b) = (a.setup().await, b.setup().await);
        let routes = [route(&a, "192.168.61.1"), route(&b, "192.168.61.2")];
        net_a.set_routes(&routes).await?;
        net_b.set_routes(&routes).await?;
        let b0 = net_a.attach("b0", &[]).await?;
        let r0 = net_b.attach("r0", &[]).await?;
        let client_a = net_a.attach("cla", &[]).await?;
        let client_b = net_b.attach("clb", &[]).await?;
        traffic::http_server(&b0.netns, HTTP.1, "b0");
        traffic::http_server(&r0.netns, HTTP.1, "r0");
        traffic::bulk_server(&b0.netns, BULK.1, BULK_BYTES);
        Ok(Fabric {
            net_a,
            net_b,
            dns_a: Dns::new(&[])?,
            dns_b: Dns::new(&[])?,
            b0,
            r0,
            client_a,
            client_b,
            a,
            _b: b,
        })
    }

    /// Applies `set` as the agent does (DNS first, then the nft table) on both nodes at once;
    /// true when either node rebuilt its table whole.
    pub(crate) async fn apply(&self, set: &ServiceSet) -> anyhow::Result<bool> {
        let (a, b) = tokio::join!(
            apply_one(&self.dns_a, &self.net_a, set),
            apply_one(&self.dns_b, &self.net_b, set)
        );
        let rebuilt =
            |o: ServicesOutcome| matches!(o, ServicesOutcome::Applied { rebuilt: true, .. });
        Ok(rebuilt(a?) || rebuilt(b?))
    }
}

/// One node's apply, as the agent does it: DNS first, then the nft table.
async fn apply_one(
    dns: &Dns,
    net: &NodeNetwork,
    set: &ServiceSet,
) -> anyhow::Result<ServicesOutcome> {
    dns.update(set)?;
    Ok(net.apply_services(set).await?)
}

fn route(node: &Node, address: &str) -> PodRoute {
    PodRoute {
        node_name: node.node_name.clone(),
        pod_cidr: node.cidr.to_string(),
        node_address: address.into(),
    }
}

/// Service `name` on `vip` with TCP ports `ports` (port, target) and endpoints `eps`.
pub(crate) fn service(
    name: &str,
    vip: Ipv4Addr,
    ports: &[(u16, u16)],
    eps: &[Ipv4Addr],
) -> Service {
    Service {
        name: name.into(),
        virtual_ip: vip.to_string(),
        ports: ports
            .iter()
            .map(|(port, target)| ServicePort {
                name: String::new(),
                port: (*port).into(),
                target: (*target).into(),
                protocol: Protocol::Tcp as i32,
            })
            .collect(),
        endpoints: eps
            .iter()
            .map(|ip| Endpoint {
                container_id: format!("c-{ip}"),
                node: "bench".into(),
                ip: ip.to_string(),
            })
            .collect(),
    }
}

/// The measured service `web` (HTTP and bulk ports) with endpoints `eps`, plus `total - 1`
/// one-port fillers on 10.96.16.0 onwards, each with endpoints `filler_eps`.
pub(crate) fn set_of(
    generation: u64,
    total: usize,
    eps: &[Ipv4Addr],
    filler_eps: &[Ipv4Addr],
) -> ServiceSet {
    let mut services: Vec<Service> = (0..total.saturating_sub(1))
        .map(|i| {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            service(&format!("filler-{i}"), filler_vip(i), &[HTTP], filler_eps)
        })
        .collect();
    services.push(service("web", VIP, &[HTTP, BULK], eps));
    ServiceSet {
        generation,
        services,
    }
}

/// Filler `i`'s virtual IP: 10.96.16.0 + i.
pub(crate) fn filler_vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a60_1000 + i)
}
