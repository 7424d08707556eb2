//! Service virtual IPs: one per deployment with service ports, from the service network,
//! reserved under its own key so that no address is ever handed out twice.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::SchedError;
use crate::records::{self, DEPLOYMENTS, DeploymentRecord, VIPS, vip_key};
use crate::store::{Expect, Op, Store, StoreError};

/// The first address of `network` (network and broadcast addresses excluded) that no VIP key
/// and no deployment record names. The caller reserves it with [`claim`] in its own write: a
/// concurrent allocation of the same address then conflicts and picks again.
pub(crate) async fn free(store: &dyn Store, network: Ipv4Net) -> Result<Ipv4Addr, SchedError> {
    let used =
        records::claimed(store, VIPS, DEPLOYMENTS, |d: DeploymentRecord| d.virtual_ip).await?;
    network
        .hosts()
        .find(|ip| !used.contains(&ip.to_string()))
        .ok_or_else(|| {
            SchedError::FailedPrecondition(format!(
                "no virtual IP left in the service network {network}"
            ))
        })
}

/// The write that reserves `ip` for deployment `name` (fails if anyone holds it).
pub(crate) fn claim(ip: Ipv4Addr, name: &str) -> Op {
    Op::Put {
        key: vip_key(ip),
        value: name.as_bytes().to_vec(),
        expect: Expect::Absent,
    }
}

/// The write that frees the VIP a deployment record holds, if any.
pub(crate) fn release(rec: &DeploymentRecord) -> Option<Op> {
    let ip: Ipv4Addr = rec.virtual_ip.parse().ok()?;
    Some(Op::Delete {
        key: vip_key(ip),
        expect: Expect::Any,
    })
}

/// Whether a failed write lost a race for a VIP (pick another and try again).
pub(crate) fn lost_race(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict { key, .. } if key.contains(VIPS))
}

/// Refuses a service network that overlaps the pod network or a network of this host (its
/// interfaces' subnets): virtual IPs there would shadow real addresses.
pub(crate) fn check_network(
    service: Ipv4Net,
    pod: Ipv4Net,
    host: &[Ipv4Net],
) -> Result<(), SchedError> {
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    if overlaps(&service, &pod) {
        return Err(SchedError::invalid(
            "service_network",
            format!("{service} overlaps the pod network {pod}"),
        ));
    }
    if let Some(net) = host.iter().find(|n| overlaps(&service, n)) {
        return Err(SchedError::invalid(
            "service_network",
            format!("{service} overlaps {net}, a network of this host"),
        ));
    }
    Ok(())
}

/// The IPv4 networks of this host's interfaces, loopback excluded.
pub(crate) fn host_networks() -> Result<Vec<Ipv4Net>, SchedError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| {
        SchedError::FailedPrecondition(format!("listing this host's addresses: {e}"))
    })?;
    let mut nets = Vec::new();
    for a in addrs {
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        let (Some(addr), Some(mask)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else {
            continue;
        };
        let ip = addr.ip();
        if ip.is_loopback() {
            continue;
        }
        let prefix = u8::try_from(u32::from(mask.ip()).count_ones()).unwrap_or(32);
        if let Ok(net) = Ipv4Net::new(ip, prefix) {
            nets.push(net.trunc());
        }
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_service_networks_are_refused_naming_the_field() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let pod = net("10.88.0.0/16");
        let host = [net("192.168.1.0/24")];
        assert!(check_network(net("10.96.0.0/16"), pod, &host).is_ok());
        for (service, what) in [
            ("10.0.0.0/8", "pod network"),
            ("10.88.4.0/24", "pod network"),
            ("192.168.0.0/16", "192.168.1.0/24"),
        ] {
            let e = check_network(net(service), pod, &host)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("service_network") && e.contains(what),
                "{service}: {e}"
            );
        }
    }

    #[test]
    fn this_hosts_networks_are_listed() {
        let nets = host_networks().expect("getifaddrs");
        assert!(nets.iter().all(|n| !n.addr().is_loopback()), "{nets:?}");
    }
}
