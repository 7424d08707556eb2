//! `kill [--all] ID [SIGNAL]`: names (TERM, SIGTERM) and numbers.

use std::path::Path;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Signal every process of the container, not only init.
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    #[arg(default_value = "TERM")]
    pub signal: String,
}

pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    let signal = berth_runtime::container::parse_signal(&args.signal)?;
    berth_runtime::kill(root, &args.id, signal, args.all)?;
    Ok(())
}
