//! `berth approve NAME`: lets a rollout that awaits approval go on.

use berth_proto::v1::ApproveRequest;

use crate::Context;
use crate::cluster::{self, SchedulerArg, WaitArgs};
use crate::output::OutputFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The deployment.
    name: String,
    #[command(flatten)]
    wait: WaitArgs,
    /// table for people, json for programs (with --wait: the final rollout event).
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    scheduler: SchedulerArg,
}

pub fn run(args: Args, _ctx: &Context) -> anyhow::Result<i32> {
    cluster::with_client(&args.scheduler.scheduler, async |mut client| {
        let d = client
            .approve(ApproveRequest {
                name: args.name.clone(),
            })
            .await
            .map_err(cluster::status_error)?
            .into_inner();
        super::status::after_change(&mut client, d, "approved", &args.wait, args.output).await
    })
}
