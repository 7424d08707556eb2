//! `resume ID`: thaws a paused container.

use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub id: String,
}

pub fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    berth_runtime::container::set_paused(root, &args.id, false)?;
    Ok(())
}
