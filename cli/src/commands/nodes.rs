//! `berth nodes`: the cluster's nodes, their readiness, capacity and load.

use berth_proto::v1::{ListNodesRequest, Resources};
use serde::Serialize;

use crate::Context;
use crate::cluster;
use crate::output::{human_bytes, print_rows};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    ready: bool,
    address: String,
    agent_endpoint: String,
    pod_cidr: String,
    labels: std::collections::BTreeMap<String, String>,
    cpu_millis_allocatable: u64,
    cpu_millis_allocated: u64,
    memory_bytes_allocatable: u64,
    memory_bytes_allocated: u64,
    containers: u32,
    last_heartbeat_ms: i64,
}

pub(crate) fn run(_args: Args, ctx: &Context) -> anyhow::Result<()> {
    let nodes = cluster::with_client(ctx.scheduler(), async |mut client| {
        client
            .list_nodes(ListNodesRequest {})
            .await
            .map_err(cluster::status_error)
            .map(|r| r.into_inner().nodes)
    })?;
    let rows: Vec<Row> = nodes
        .into_iter()
        .map(|n| {
            let cap = n.capacity.unwrap_or_default();
            let (alloc, used) = (
                cap.allocatable.unwrap_or_default(),
                cap.allocated.unwrap_or_default(),
            );
            Row {
                name: n.name,
                ready: n.ready,
                address: n.address,
                agent_endpoint: n.agent_endpoint,
                pod_cidr: n.pod_cidr,
                labels: n.labels.into_iter().collect(),
                cpu_millis_allocatable: alloc.cpu_millis,
                cpu_millis_allocated: used.cpu_millis,
                memory_bytes_allocatable: alloc.memory_bytes,
                memory_bytes_allocated: used.memory_bytes,
                containers: n.containers,
                last_heartbeat_ms: n.last_heartbeat_ms,
            }
        })
        .collect();
    print_rows(
        ctx.output(),
        &rows,
        &[
            "NAME",
            "STATUS",
            "ADDRESS",
            "POD CIDR",
            "CPU",
            "MEMORY",
            "CONTAINERS",
            "HEARTBEAT",
            "LABELS",
        ],
        |r| {
            let load = |used: Resources, alloc: Resources| {
                (
                    format!("{}m/{}m", used.cpu_millis, alloc.cpu_millis),
                    format!(
                        "{}/{}",
                        human_bytes(used.memory_bytes),
                        human_bytes(alloc.memory_bytes)
                    ),
                )
            };
            let (cpu, memory) = load(
                Resources {
                    cpu_millis: r.cpu_millis_allocated,
                    memory_bytes: r.memory_bytes_allocated,
                },
                Resources {
                    cpu_millis: r.cpu_millis_allocatable,
                    memory_bytes: r.memory_bytes_allocatable,
                },
            );
            let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                r.name.clone(),
                if r.ready { "ready" } else { "not-ready" }.to_string(),
                r.address.clone(),
                r.pod_cidr.clone(),
                cpu,
                memory,
                r.containers.to_string(),
                cluster::age(r.last_heartbeat_ms),
                labels.join(","),
            ]
        },
    )
}
