//! `berth config update NAME [--from-file F | -]`: a new version; the deployments whose
//! current revision uses the config get a new revision and roll.

use berth_proto::v1::PutFileRequest;

use crate::Context;
use crate::files::{ValueSource, print_updated, with_configs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(value_parser = super::check_name)]
    name: String,
    #[command(flatten)]
    source: ValueSource,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let name = args.name.clone();
    let mut data = args.source.read(&format!("config {name}"))?;
    let reply = with_configs(ctx, async |mut client| {
        client
            .update_config(PutFileRequest {
                name: args.name,
                data: std::mem::take(&mut *data),
            })
            .await
            .map_err(crate::cluster::status_error)
            .map(tonic::Response::into_inner)
    })?;
    print_updated("config", &name, ctx.output(), reply)
}
