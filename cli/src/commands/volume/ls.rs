//! `berth volume ls`: the named volumes on this machine, or with `--cluster` (or
//! `--scheduler`, as `berth ps` does) the scheduler's: each volume's node and the deployments
//! using it.

use berth_proto::v1::ListVolumesRequest;
use serde::Serialize;

use crate::Context;
use crate::output::{print_rows, timestamp};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// List the cluster's volumes through the scheduler (implied by --scheduler or
    /// BERTH_SCHEDULER) instead of this machine's.
    #[arg(long)]
    cluster: bool,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    if args.cluster || ctx.scheduler.is_some() {
        return cluster(ctx);
    }
    let volumes = super::open_store(ctx)?.list()?;
    print_rows(
        ctx.output(),
        &volumes,
        &["NAME", "CREATED", "IN USE BY", "MOUNTPOINT"],
        |v| {
            vec![
                v.name.clone(),
                v.created.clone(),
                v.in_use_by.join(","),
                v.mountpoint.display().to_string(),
            ]
        },
    )
}

/// A cluster volume as `--cluster -o json` prints it.
#[derive(Debug, Serialize)]
struct ClusterRow {
    name: String,
    /// The node holding the data; empty until a replica has run with it.
    node: String,
    used_by: Vec<String>,
    /// RFC 3339, or "never" before the first placement.
    created: String,
}

fn cluster(ctx: &Context) -> anyhow::Result<()> {
    let volumes = crate::cluster::with_client(ctx.scheduler(), async |mut client| {
        client
            .list_volumes(ListVolumesRequest {})
            .await
            .map_err(crate::cluster::status_error)
            .map(|r| r.into_inner().volumes)
    })?;
    let rows: Vec<ClusterRow> = volumes
        .into_iter()
        .map(|v| ClusterRow {
            name: v.name,
            node: v.node,
            used_by: v.used_by,
            created: timestamp(v.created_at_ms),
        })
        .collect();
    print_rows(
        ctx.output(),
        &rows,
        &["NAME", "NODE", "USED BY", "CREATED"],
        |r| {
            let node = if r.node.is_empty() { "-" } else { &r.node };
            vec![
                r.name.clone(),
                node.to_string(),
                r.used_by.join(","),
                r.created.clone(),
            ]
        },
    )
}
