//! `berth config ls`: every config, its newest version and the deployments using it.

use berth_proto::v1::ListFilesRequest;

use crate::Context;
use crate::files::{print_list, with_configs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(super) fn run(_args: Args, ctx: &Context) -> anyhow::Result<()> {
    let files = with_configs(ctx, async |mut client| {
        client
            .list_configs(ListFilesRequest {})
            .await
            .map_err(crate::cluster::status_error)
            .map(|r| r.into_inner().files)
    })?;
    print_list(ctx.output(), files)
}
