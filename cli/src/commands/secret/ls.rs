//! `berth secret ls`: every secret, its newest version and the deployments using it (never a value).

use berth_proto::v1::ListFilesRequest;

use crate::Context;
use crate::files::{print_list, with_secrets};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(super) fn run(_args: Args, ctx: &Context) -> anyhow::Result<()> {
    let files = with_secrets(ctx, async |mut client| {
        client
            .list_secrets(ListFilesRequest {})
            .await
            .map_err(crate::cluster::status_error)
            .map(|r| r.into_inner().files)
    })?;
    print_list(ctx.output(), files)
}
