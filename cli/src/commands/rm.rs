//! `berth rm`: removes stopped containers (running ones too with `-f`): runtime state, root
//! filesystem mount and directory.

use std::time::Duration;

use anyhow::bail;

use crate::Context;
use crate::container::layout::{self, Status};
use crate::container::setup::teardown;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Kill running containers first.
    #[arg(short, long)]
    force: bool,
    /// Container ids or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for key in &args.containers {
        match remove(ctx, key, args.force) {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("berth: {}", crate::chain(&e));
                failed.push(key.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!("could not remove {}", failed.join(", "));
    }
    Ok(())
}

fn remove(ctx: &Context, key: &str, force: bool) -> anyhow::Result<()> {
    let (paths, meta) = layout::find(&ctx.data_dir, key)?;
    match layout::status(&paths, &meta) {
        Status::Running | Status::Created if !force => {
            bail!("container {key} is running: stop it first or use rm -f")
        }
        Status::Running | Status::Created => {
            super::stop::stop(&paths, layout::owner_pid(&paths, &meta), Duration::ZERO)?;
        }
        Status::Exited(_) | Status::Dead => {}
    }
    teardown(&paths)
}
