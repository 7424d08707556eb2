//! `berth volume ls`: the named volumes on this machine.

use crate::Context;
use crate::output::print_rows;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(super) fn run(_args: Args, ctx: &Context) -> anyhow::Result<()> {
    let volumes = super::open_store(ctx)?.list()?;
    print_rows(
        ctx.output(),
        &volumes,
        &["NAME", "CREATED", "IN USE BY", "MOUNTPOINT"],
        |v| {
            vec![
                v.name.clone(),
                v.created.clone(),
                v.in_use_by.join(","),
                v.mountpoint.display().to_string(),
            ]
        },
    )
}
