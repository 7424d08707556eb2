//! `delete [--force] ID`.

use std::path::Path;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Kill a running or paused container first.
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    match berth_runtime::delete(root, &args.id, args.force) {
        // runc: `delete --force` of a missing container succeeds.
        Err(berth_runtime::Error::NotFound(_)) if args.force => Ok(()),
        r => Ok(r?),
    }
}
