//! `berth secret rm NAME`: remove a secret and its versions; the scheduler refuses while a
//! deployment's current revision uses it.

use crate::Context;
use crate::files::Kind;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(value_parser = crate::files::parse_name)]
    name: String,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    crate::files::remove(ctx, Kind::Secret, args.name)
}
