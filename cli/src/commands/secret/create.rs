//! `berth secret create NAME [--from-file F | -]`: a new secret, version 1. The value is read
//! from the file or standard input, sent once and never printed.

use crate::Context;
use crate::files::{Kind, PutArgs};

pub(crate) type Args = PutArgs;

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    crate::files::create(ctx, Kind::Secret, args)
}
