//! `berth volume inspect NAME...`: volumes as JSON (name, mountpoint, created, labels,
//! in_use_by), always JSON as `image inspect` is.

use crate::Context;
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Volume names.
    #[arg(required = true)]
    names: Vec<String>,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let store = super::open_store(ctx)?;
    let volumes = args
        .names
        .iter()
        .map(|name| store.inspect(name))
        .collect::<Result<Vec<_>, _>>()?;
    print_json(&volumes)
}
