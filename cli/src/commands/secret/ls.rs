//! `berth secret ls`: every secret, its newest version and the deployments using it.

use crate::Context;
use crate::files::Kind;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(super) fn run(_args: Args, ctx: &Context) -> anyhow::Result<()> {
    crate::files::list(ctx, Kind::Secret)
}
