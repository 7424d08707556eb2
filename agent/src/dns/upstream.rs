//! Where names outside `berth.` go: the resolvers of `--dns-upstream`, or else the host's
//! /etc/resolv.conf nameservers, through hickory's forwarding zone handler.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use hickory_server::resolver::config::{ConnectionConfig, NameServerConfig};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};

use super::DnsError;

/// `IP` or `IP:PORT` (`[V6]:PORT`), comma-separated; port 53 when not given.
pub fn parse_upstreams(text: &str) -> Result<Vec<SocketAddr>, DnsError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<SocketAddr>()
                .or_else(|_| item.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| DnsError::InvalidUpstream {
                    text: item.to_owned(),
                    reason: "expected IP or IP:PORT".into(),
                })
        })
        .collect()
}

/// The nameservers of the resolv.conf at `path` (the host's is /etc/resolv.conf), port 53.
pub fn host_upstreams(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let failed = |reason: String| DnsError::HostResolvers {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let (config, _) = hickory_server::resolver::system_conf::parse_resolv_conf(&text)
        .map_err(|e| failed(e.to_string()))?;
    let mut out: Vec<SocketAddr> = Vec::new();
    for ns in config.name_servers() {
        let addr = SocketAddr::new(ns.ip, 53);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

/// A forwarder for the root zone asking `upstreams` (UDP, then TCP for truncated answers).
pub(super) fn forwarder(upstreams: &[SocketAddr]) -> Result<ForwardZoneHandler, DnsError> {
    let name_servers = upstreams
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    let config = ForwardConfig {
        name_servers,
        options: None,
    };
    ForwardZoneHandler::builder_tokio(config)
        .build()
        .map_err(|e| DnsError::InvalidUpstream {
            text: upstreams
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            reason: e,
        })
}
