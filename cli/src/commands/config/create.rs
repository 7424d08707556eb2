//! `berth config create NAME [--from-file F | -]`: a new config, version 1.

use crate::Context;
use crate::files::{Kind, PutArgs};

pub(crate) type Args = PutArgs;

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    crate::files::create(ctx, Kind::Config, args)
}
