//! `berth delete NAME`: removes a deployment; its containers are stopped and removed.

use berth_proto::v1::DeleteDeploymentRequest;

use crate::Context;
use crate::cluster;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The deployment.
    name: String,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    cluster::with_client(ctx.scheduler(), async |mut client| {
        client
            .delete(DeleteDeploymentRequest {
                name: args.name.clone(),
                environment: crate::cluster::environment(),
            })
            .await
            .map_err(cluster::status_error)?;
        Ok(())
    })?;
    println!("{}: deleted", args.name);
    Ok(())
}
