//! `berth approve NAME`: lets a rollout that awaits approval go on.

use berth_proto::v1::ApproveRequest;

use crate::Context;
use crate::cluster::{self, WaitArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The deployment.
    name: String,
    #[command(flatten)]
    wait: WaitArgs,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    cluster::with_client(ctx.scheduler(), async |mut client| {
        let d = client
            .approve(ApproveRequest {
                name: args.name.clone(),
                environment: crate::cluster::environment(),
            })
            .await
            .map_err(cluster::status_error)?
            .into_inner();
        super::status::after_change(&mut client, d, "approved", &args.wait, ctx.output()).await
    })
}
