//! `pause ID`: freezes the container's cgroup.

use std::path::Path;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    pub id: String,
}

pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    berth_runtime::container::set_paused(root, &args.id, true)?;
    Ok(())
}
