//! `berth scale NAME N`: sets a deployment's replica count (no new revision).

use berth_proto::v1::ScaleRequest;

use crate::Context;
use crate::cluster;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The deployment.
    name: String,
    /// The number of replicas.
    replicas: u32,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let d = cluster::with_client(ctx.scheduler(), async |mut client| {
        client
            .scale(ScaleRequest {
                name: args.name.clone(),
                replicas: args.replicas,
                environment: crate::cluster::environment(),
            })
            .await
            .map_err(cluster::status_error)
            .map(|r| r.into_inner())
    })?;
    match ctx.output() {
        OutputFormat::Json => print_json(&super::status::DeploymentJson::from(&d)),
        OutputFormat::Table => {
            println!(
                "{}: scaled to {} replicas ({} ready)",
                args.name, args.replicas, d.ready_replicas
            );
            Ok(())
        }
    }
}
