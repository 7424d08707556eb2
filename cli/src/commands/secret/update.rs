//! `berth secret update NAME [--from-file F | -]`: a new version; every deployment whose
//! current revision uses the secret gets a new revision and rolls (printed).

use crate::Context;
use crate::files::{Kind, PutArgs};

pub(crate) type Args = PutArgs;

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    crate::files::update(ctx, Kind::Secret, args)
}
