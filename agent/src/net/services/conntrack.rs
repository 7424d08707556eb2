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
/// leaves behind. Blocking.
pub(super) fn flush_vips(ns: Option<&Path>, vips: &BTreeSet<Ipv4Addr>) {
    for vip in vips {
        delete(ns, &["--orig-dst", &vip.to_string()]);
    }
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
