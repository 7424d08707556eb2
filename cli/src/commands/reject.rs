//! `berth reject NAME`: ends a rollout that awaits approval; the stable revision stays.

use berth_proto::v1::RejectRequest;

use crate::Context;
use crate::cluster::{self, SchedulerArg};
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The deployment.
    name: String,
    /// table for people, json for programs.
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    scheduler: SchedulerArg,
}

pub fn run(args: Args, _ctx: &Context) -> anyhow::Result<()> {
    let d = cluster::with_client(&args.scheduler.scheduler, async |mut client| {
        client
            .reject(RejectRequest {
                name: args.name.clone(),
            })
            .await
            .map_err(cluster::status_error)
            .map(|r| r.into_inner())
    })?;
    match args.output {
        OutputFormat::Json => print_json(&super::status::DeploymentJson::from(&d)),
        OutputFormat::Table => {
            println!(
                "{}: revision {} rejected; revision {} stays",
                args.name, d.revision, d.stable_revision
            );
            Ok(())
        }
    }
}
