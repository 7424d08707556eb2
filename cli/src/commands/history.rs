//! `berth history NAME`: a deployment's revisions, each with how its rollout ended.

use berth_proto::v1::HistoryRequest;
use serde::Serialize;

use crate::Context;
use crate::cluster;
use crate::output::print_rows;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The deployment.
    name: String,
}

#[derive(Debug, Serialize)]
struct Row {
    revision: u64,
    created_at_ms: i64,
    outcome: String,
    image: String,
    replicas: u32,
    message: String,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let history = cluster::with_client(ctx.scheduler(), async |mut client| {
        client
            .history(HistoryRequest {
                name: args.name.clone(),
            })
            .await
            .map_err(cluster::status_error)
            .map(|r| r.into_inner())
    })?;
    let rows: Vec<Row> = history
        .revisions
        .iter()
        .map(|r| {
            let spec = r.spec.clone().unwrap_or_default();
            Row {
                revision: r.revision,
                created_at_ms: r.created_at_ms,
                outcome: cluster::phase_name(r.outcome),
                image: spec.image,
                replicas: spec.replicas,
                message: r.message.clone(),
            }
        })
        .collect();
    print_rows(
        ctx.output(),
        &rows,
        &[
            "REVISION", "CREATED", "OUTCOME", "IMAGE", "REPLICAS", "MESSAGE",
        ],
        |r| {
            vec![
                r.revision.to_string(),
                format!("{} ago", cluster::age(r.created_at_ms)),
                r.outcome.clone(),
                r.image.clone(),
                r.replicas.to_string(),
                r.message.replace('\n', " "),
            ]
        },
    )
}
