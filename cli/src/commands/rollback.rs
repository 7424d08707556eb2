//! `berth rollback NAME [--to REV]`: rolls out an earlier revision's spec again.

use berth_proto::v1::RollbackRequest;

use crate::Context;
use crate::cluster::{self, WaitArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The deployment.
    name: String,
    /// The revision to go back to (default: the one before the current one).
    #[arg(long = "to", value_name = "REV")]
    to: Option<u64>,
    #[command(flatten)]
    wait: WaitArgs,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    cluster::with_client(ctx.scheduler(), async |mut client| {
        let d = client
            .rollback(RollbackRequest {
                name: args.name.clone(),
                to_revision: args.to.unwrap_or(0),
                environment: crate::cluster::environment(),
            })
            .await
            .map_err(cluster::status_error)?
            .into_inner();
        super::status::after_change(&mut client, d, "rolling back", &args.wait, ctx.output()).await
    })
}
