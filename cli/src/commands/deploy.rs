//! `berth deploy -f app.toml`: applies a deployment spec, optionally following its rollout.
//!
//! Exit codes with `--wait`: 0 complete, 1 failed / rolled back / rejected (reason on
//! stderr), 3 awaiting approval (with `--stop-at-approval`), 4 timed out.

use std::path::PathBuf;

use berth_proto::v1::{ApplyRequest, DeploymentSpec};
use serde::Serialize;

use crate::Context;
use crate::cluster::spec::SpecFile;
use crate::cluster::{self, WaitArgs};
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The deployment spec (TOML; see examples/README.md).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, Serialize)]
struct Applied {
    name: String,
    revision: u64,
    changed: bool,
    phase: String,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    let spec = SpecFile::load(&args.file)?;
    let name = spec.name().to_string();
    cluster::with_client(ctx.scheduler(), async |mut client| {
        let reply = client
            .apply(ApplyRequest {
                spec: Some(DeploymentSpec {
                    environment: cluster::environment(),
                    ..spec.to_proto()
                }),
            })
            .await
            .map_err(cluster::status_error)?
            .into_inner();
        let deployment = reply.deployment.unwrap_or_default();
        let applied = Applied {
            name: name.clone(),
            revision: deployment.revision,
            changed: reply.changed,
            phase: cluster::phase_name(deployment.phase),
        };
        if !args.wait.wait {
            match ctx.output() {
                OutputFormat::Json => print_json(&applied)?,
                OutputFormat::Table if applied.changed => println!(
                    "{name}: revision {} applied, rolling out (berth status {name})",
                    applied.revision
                ),
                OutputFormat::Table => println!(
                    "{name}: unchanged, still revision {} ({})",
                    applied.revision, applied.phase
                ),
            }
            return Ok(0);
        }
        if ctx.output() == OutputFormat::Table {
            if applied.changed {
                println!("{name}: revision {} applied", applied.revision);
            } else {
                println!("{name}: unchanged, revision {}", applied.revision);
            }
        }
        cluster::wait_rollout(
            &mut client,
            &name,
            deployment.revision,
            &args.wait,
            ctx.output(),
        )
        .await
    })
}
