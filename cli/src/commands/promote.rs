//! `berth promote APP --from A --to B [--release ID] [--wait]`: applies the release serving
//! in A (or release ID, which must have completed there) to B, under B's approval policy.
//!
//! Exit codes with `--wait` as for `deploy --wait`: 0 complete, 1 failed, 3 awaiting approval
//! (with `--stop-at-approval`), 4 timed out.

use berth_proto::v1::PromoteRequest;
use berth_proto::v1::release_service_client::ReleaseServiceClient;
use serde::Serialize;

use crate::Context;
use crate::cluster::{self, WaitArgs};
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The deployment (its name in both environments).
    app: String,
    /// The environment whose release is promoted.
    #[arg(long)]
    from: String,
    /// The environment it is applied to.
    #[arg(long)]
    to: String,
    /// A release id (`r-...`) that completed in --from (default: the one serving there).
    #[arg(long)]
    release: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, Serialize)]
struct Promoted {
    app: String,
    release: String,
    image: String,
    from: String,
    to: String,
    revision: u64,
    changed: bool,
    phase: String,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    crate::remote::block_on(async {
        let channel = cluster::channel(ctx.scheduler()).await?;
        let reply = ReleaseServiceClient::new(channel)
            .promote(PromoteRequest {
                app: args.app.clone(),
                from_environment: args.from.clone(),
                to_environment: args.to.clone(),
                release: args.release.clone().unwrap_or_default(),
            })
            .await
            .map_err(cluster::status_error)?
            .into_inner();
        let deployment = reply.deployment.unwrap_or_default();
        let release = reply.release.unwrap_or_default();
        let promoted = Promoted {
            app: args.app.clone(),
            release: release.id,
            image: release.image,
            from: args.from.clone(),
            to: args.to.clone(),
            revision: deployment.revision,
            changed: reply.changed,
            phase: cluster::phase_name(deployment.phase),
        };
        if ctx.output() == OutputFormat::Json && !args.wait.wait {
            print_json(&promoted)?;
        } else if ctx.output() == OutputFormat::Table {
            let what = if promoted.changed {
                format!("revision {}, {}", promoted.revision, promoted.phase)
            } else {
                format!("already there: revision {}", promoted.revision)
            };
            println!(
                "{}: release {} promoted {} -> {} ({what})",
                promoted.app, promoted.release, promoted.from, promoted.to
            );
        }
        if !args.wait.wait {
            return Ok(0);
        }
        // The rollout to follow is the target environment's.
        cluster::set_environment(&args.to);
        let mut client = cluster::connect(ctx.scheduler()).await?;
        cluster::wait_rollout(
            &mut client,
            &args.app,
            deployment.revision,
            &args.wait,
            ctx.output(),
        )
        .await
    })
}
