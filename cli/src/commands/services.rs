//! `berth services`: every service with its virtual IP, ports and ready endpoints.

use berth_proto::v1::{ListServicesRequest, Protocol, ServicePort};
use serde::Serialize;

use crate::Context;
use crate::cluster;
use crate::output::print_rows;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    virtual_ip: String,
    ports: Vec<PortJson>,
    endpoints: Vec<EndpointJson>,
}

#[derive(Debug, Serialize)]
struct PortJson {
    name: String,
    port: u32,
    target: u32,
    protocol: &'static str,
}

#[derive(Debug, Serialize)]
struct EndpointJson {
    container_id: String,
    node: String,
    ip: String,
}

/// "tcp" or "udp", as specs spell them.
pub(crate) fn protocol_name(protocol: i32) -> &'static str {
    match Protocol::try_from(protocol) {
        Ok(Protocol::Udp) => "udp",
        _ => "tcp",
    }
}

fn port(p: ServicePort) -> PortJson {
    PortJson {
        name: p.name,
        port: p.port,
        target: p.target,
        protocol: protocol_name(p.protocol),
    }
}

pub(crate) fn run(_args: Args, ctx: &Context) -> anyhow::Result<()> {
    let services = cluster::with_client(ctx.scheduler(), async |mut client| {
        client
            .list_services(ListServicesRequest {
                environment: crate::cluster::environment(),
            })
            .await
            .map_err(cluster::status_error)
            .map(|r| r.into_inner().services)
    })?;
    let rows: Vec<Row> = services
        .into_iter()
        .map(|s| Row {
            name: s.name,
            virtual_ip: s.virtual_ip,
            ports: s.ports.into_iter().map(port).collect(),
            endpoints: s
                .endpoints
                .into_iter()
                .map(|e| EndpointJson {
                    container_id: e.container_id,
                    node: e.node,
                    ip: e.ip,
                })
                .collect(),
        })
        .collect();
    print_rows(
        ctx.output(),
        &rows,
        &["NAME", "VIRTUAL IP", "PORTS", "ENDPOINTS"],
        |r| {
            let ports: Vec<String> = r
                .ports
                .iter()
                .map(|p| format!("{}->{}/{}", p.port, p.target, p.protocol))
                .collect();
            let endpoints: Vec<&str> = r.endpoints.iter().map(|e| e.ip.as_str()).collect();
            vec![
                r.name.clone(),
                r.virtual_ip.clone(),
                ports.join(","),
                if endpoints.is_empty() {
                    "none ready".to_string()
                } else {
                    endpoints.join(",")
                },
            ]
        },
    )
}
