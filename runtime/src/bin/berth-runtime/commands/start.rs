//! `start ID`.

use std::path::Path;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    pub id: String,
}

pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    berth_runtime::start(root, &args.id)?;
    Ok(())
}
