//! `berth reject NAME`: ends a rollout that awaits approval; the stable revision stays.

use berth_proto::v1::{GetDeploymentRequest, RejectRequest};

use crate::Context;
use crate::cluster;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The deployment.
    name: String,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let (rejected, d) = cluster::with_client(ctx.scheduler(), async |mut client| {
        // The reply is the deployment afterwards, back on its stable revision: the revision
        // that awaited approval is the one before.
        let awaiting = client
            .get(GetDeploymentRequest {
                name: args.name.clone(),
                environment: crate::cluster::environment(),
            })
            .await
            .map_err(cluster::status_error)?
            .into_inner()
            .revision;
        let d = client
            .reject(RejectRequest {
                name: args.name.clone(),
                environment: crate::cluster::environment(),
            })
            .await
            .map_err(cluster::status_error)?
            .into_inner();
        Ok((awaiting, d))
    })?;
    match ctx.output() {
        OutputFormat::Json => print_json(&super::status::DeploymentJson::from(&d)),
        OutputFormat::Table => {
            if d.stable_revision == 0 {
                println!("{}: revision {rejected} rejected", args.name);
            } else {
                println!(
                    "{}: revision {rejected} rejected; revision {} stays",
                    args.name, d.stable_revision
                );
            }
            Ok(())
        }
    }
}
