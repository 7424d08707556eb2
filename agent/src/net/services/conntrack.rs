//! UDP flows to endpoints that left: conntrack keeps DNATing an established UDP "connection"
//! to its old endpoint for as long as packets keep coming, so those entries are deleted
//! (`conntrack -D`) and the next packet is balanced afresh over the live endpoints.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use super::Svc;
use crate::net::ns;
use crate::net::state::Proto;

/// One UDP flow class to forget: packets sent to `vip:port` and answered by `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Departed {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub endpoint: Ipv4Addr,
}

/// The UDP `(VIP, port, endpoint)` triples of `old` that `new` no longer has (an endpoint
/// left, a port or a whole service went away).
pub(super) fn departed_udp(old: &[Svc], new: &[Svc]) -> Vec<Departed> {
    let triples = |svcs: &[Svc]| -> BTreeSet<Departed> {
        svcs.iter()
            .flat_map(|s| {
                s.ports
                    .iter()
                    .filter(|p| p.proto == Proto::Udp)
                    .flat_map(move |p| {
                        s.endpoints.iter().map(move |ep| Departed {
                            vip: s.vip,
                            port: p.port,
                            endpoint: *ep,
                        })
                    })
            })
            .collect()
    };
    let kept = triples(new);
    triples(old).difference(&kept).cloned().collect()
}

/// Deletes the conntrack entries of every departed flow class in the netns at `ns`; returns
/// how many classes were flushed. Failures are logged, not returned: the rules are in place
/// already, and a stale flow only lasts until it idles out. Blocking.
pub(super) fn flush(ns: Option<&Path>, departed: &[Departed]) -> usize {
    departed
        .iter()
        .filter(|d| {
            let (vip, port, ep) = (
                d.vip.to_string(),
                d.port.to_string(),
                d.endpoint.to_string(),
            );
            let filter = [
                "-p",
                "udp",
                "--orig-dst",
                &vip,
                "--orig-port-dst",
                &port,
                "--reply-src",
                &ep,
            ];
            delete(ns, &filter)
        })
        .count()
}

/// Deletes every flow to the virtual IPs `vips` (any protocol): what removing the balancer
/// leaves behind. One `conntrack -L` finds the VIPs that have flows, and only those get a
/// `conntrack -D`: with thousands of services, one process per VIP took tens of seconds.
/// Blocking.
pub(super) fn flush_vips(ns: Option<&Path>, vips: &BTreeSet<Ipv4Addr>) {
    // Most sets remove no virtual IP: no listing (a process and the whole table) for them.
    if vips.is_empty() {
        return;
    }
    let listed = ns::command_output(ns, &ns::tool("conntrack"), &["-L"], b"");
    let with_flows = match listed {
        Ok(out) if out.status.success() => {
            originally_to(&String::from_utf8_lossy(&out.stdout), vips)
        }
        // Listing failed: delete VIP by VIP, as before, so no flow is left behind.
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            tracing::warn!("conntrack -L failed: {}", stderr.trim());
            vips.clone()
        }
        Err(e) => {
            tracing::warn!("conntrack -L: {e}");
            vips.clone()
        }
    };
    for vip in &with_flows {
        delete(ns, &["--orig-dst", &vip.to_string()]);
    }
}

/// The addresses of `vips` that a flow in `conntrack -L` output was sent to: the first
/// `dst=` of a line is the original direction's destination.
fn originally_to(listing: &str, vips: &BTreeSet<Ipv4Addr>) -> BTreeSet<Ipv4Addr> {
    listing
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("dst="))
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        })
        .filter(|dst| vips.contains(dst))
        .collect()
}

/// `conntrack -D FILTER` in the netns at `ns`; false (and a warning) when it failed.
fn delete(ns: Option<&Path>, filter: &[&str]) -> bool {
    let args: Vec<&str> = std::iter::once("-D")
        .chain(filter.iter().copied())
        .collect();
    match ns::command_output(ns, &ns::tool("conntrack"), &args, b"") {
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // conntrack exits 1 when nothing matched; that is success here.
            let ok = out.status.success() || stderr.contains("0 flow entries have been deleted");
            if !ok {
                tracing::warn!(?filter, "conntrack -D failed: {}", stderr.trim());
            }
            ok
        }
        Err(e) => {
            tracing::warn!(?filter, "conntrack -D: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::services::SvcPort;

    fn svc(name: &str, proto: Proto, eps: &[&str]) -> Svc {
        Svc {
            name: name.into(),
            vip: "10.96.0.9".parse().unwrap(),
            ports: vec![SvcPort {
                proto,
                port: 53,
                target: 5353,
            }],
            endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn flows_to_vips_are_found_by_their_original_destination() {
        let listing = "\
tcp      6 119 TIME_WAIT src=10.231.1.5 dst=10.96.0.10 sport=40000 dport=80 src=10.231.1.2 dst=10.231.1.5 sport=8080 dport=40000 [ASSURED] mark=0 use=1
udp      17 29 src=10.231.1.5 dst=10.231.1.2 sport=5000 dport=53 src=10.231.1.2 dst=10.96.0.11 sport=53 dport=5000 mark=0 use=1
";
        let vips: BTreeSet<Ipv4Addr> = ["10.96.0.10", "10.96.0.11", "10.96.0.12"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        let found = originally_to(listing, &vips);
        // 10.96.0.11 appears only as a reply destination: not a flow to that VIP.
        assert_eq!(
            found,
            BTreeSet::from(["10.96.0.10".parse::<Ipv4Addr>().unwrap()])
        );
        assert!(originally_to("", &vips).is_empty());
    }

    #[test]
    fn only_departed_udp_endpoints_are_flushed() {
        let old = [svc("dns", Proto::Udp, &["10.88.1.2", "10.88.1.3"])];
        let new = [svc("dns", Proto::Udp, &["10.88.1.3"])];
        let gone = departed_udp(&old, &new);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].endpoint, "10.88.1.2".parse::<Ipv4Addr>().unwrap());
        assert!(
            departed_udp(&new, &old).is_empty(),
            "an endpoint joining flushes nothing"
        );
        assert_eq!(
            departed_udp(&old, &[]).len(),
            2,
            "a removed service flushes all"
        );
        let tcp = [svc("web", Proto::Tcp, &["10.88.1.2"])];
        assert!(departed_udp(&tcp, &[]).is_empty(), "TCP is never flushed");
    }
}
