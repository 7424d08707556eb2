//! The `berth.` zone built from a ServiceSet: an A record per service, an SRV record per
//! service port, and the SOA whose minimum makes NXDOMAIN answers cacheable for the same 5 s.

use std::net::Ipv4Addr;
use std::sync::Arc;

use berth_proto::v1::{Protocol, Service, ServicePort, ServiceSet};
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, NS, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, ZoneHandler, ZoneType};

use super::{DOMAIN, DnsError, TTL_SECS};

/// `berth.`
pub(super) fn origin() -> Name {
    Name::from_ascii(format!("{DOMAIN}.")).expect("the cluster domain is a valid name")
}

/// The zone answering for every service in `set`; fails naming the first service or port
/// that cannot be turned into records.
pub(super) fn build(set: &ServiceSet) -> Result<Arc<dyn ZoneHandler>, DnsError> {
    let origin = origin();
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let serial = u32::try_from(set.generation % u64::from(u32::MAX)).unwrap_or(0);
    let ns_name = origin
        .prepend_label("ns")
        .map_err(|e| DnsError::Zone(e.to_string()))?;
    let soa = SOA::new(
        ns_name.clone(),
        origin
            .prepend_label("hostmaster")
            .map_err(|e| DnsError::Zone(e.to_string()))?,
        serial,
        60,
        60,
        600,
        TTL_SECS,
    );
    let mut insert = |record: Record| {
        if zone.upsert_mut(record, serial) {
            Ok(())
        } else {
            Err(DnsError::Zone("a record could not be added".into()))
        }
    };
    insert(Record::from_rdata(
        origin.clone(),
        TTL_SECS,
        RData::SOA(soa),
    ))?;
    insert(Record::from_rdata(
        origin.clone(),
        TTL_SECS,
        RData::NS(NS(ns_name)),
    ))?;
    for service in &set.services {
        for record in records(&origin, service)? {
            insert(record)?;
        }
    }
    Ok(Arc::new(zone))
}

/// The environment whose services also answer without it: `hello` is `hello.default`.
const DEFAULT_ENVIRONMENT: &str = "default";

/// The A records and the SRV records of one service, under each of its [`hosts`].
fn records(origin: &Name, service: &Service) -> Result<Vec<Record>, DnsError> {
    let invalid = |field: &'static str, reason: String| DnsError::InvalidService {
        service: service.name.clone(),
        field,
        reason,
    };
    let hosts = hosts(origin, &service.name).map_err(|reason| invalid("name", reason))?;
    let vip: Ipv4Addr = service
        .virtual_ip
        .parse()
        .map_err(|e| invalid("virtual_ip", format!("{:?}: {e}", service.virtual_ip)))?;
    let mut out = Vec::new();
    for host in hosts {
        out.push(Record::from_rdata(host.clone(), TTL_SECS, RData::A(A(vip))));
        for port in &service.ports {
            out.push(srv(&host, port).map_err(|reason| invalid("ports", reason))?);
        }
    }
    Ok(out)
}

/// Where a service answers: its name, qualified with its environment by the scheduler
/// (`hello.staging` → `hello.staging.berth.`); a default-environment service (no '.') also
/// as `hello.default.berth.`.
fn hosts(origin: &Name, name: &str) -> Result<Vec<Name>, String> {
    let mut names = vec![name.to_string()];
    if !name.contains('.') {
        names.push(format!("{name}.{DEFAULT_ENVIRONMENT}"));
    }
    names
        .iter()
        .map(|name| {
            name.rsplit('.').try_fold(origin.clone(), |host, part| {
                host.prepend_label(label(part)?)
                    .map_err(|e| format!("{name:?}: {e}"))
            })
        })
        .collect()
}

/// `_NAME._PROTO.HOST` → SRV 0 100 PORT HOST; a port without a name is named like
/// "tcp-80", as the protocol documents.
fn srv(host: &Name, port: &ServicePort) -> Result<Record, String> {
    let proto = match Protocol::try_from(port.protocol) {
        Ok(Protocol::Tcp) => "tcp",
        Ok(Protocol::Udp) => "udp",
        Err(_) => return Err(format!("unknown protocol {}", port.protocol)),
    };
    let number = u16::try_from(port.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {} is out of range 1-65535", port.port))?;
    let name = if port.name.is_empty() {
        format!("{proto}-{number}")
    } else {
        port.name.clone()
    };
    let port_label = label(&name).map_err(|e| format!("port name: {e}"))?;
    let owner = host
        .prepend_label(format!("_{proto}"))
        .and_then(|n| n.prepend_label(format!("_{port_label}")))
        .map_err(|e| format!("port name {name:?}: {e}"))?;
    Ok(Record::from_rdata(
        owner,
        TTL_SECS,
        RData::SRV(SRV::new(0, 100, number, host.clone())),
    ))
}

/// `text` if it is one DNS label (letters, digits, hyphens; 1-63 bytes; no leading or
/// trailing hyphen).
fn label(text: &str) -> Result<&str, String> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if ok {
        Ok(text)
    } else {
        Err(format!(
            "{text:?} is not a DNS label (letters, digits, inner hyphens; at most 63)"
        ))
    }
}
