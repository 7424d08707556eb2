//! `berth config create NAME [--from-file F | -]`: a new config, version 1.

use berth_proto::v1::PutFileRequest;

use crate::Context;
use crate::files::{ValueSource, print_created, with_configs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The config's name, as specs name it in `configs = [{ name = ... }]`.
    #[arg(value_parser = super::check_name)]
    name: String,
    #[command(flatten)]
    source: ValueSource,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let mut data = args.source.read(&format!("config {}", args.name))?;
    let info = with_configs(ctx, async |mut client| {
        client
            .create_config(PutFileRequest {
                name: args.name,
                data: std::mem::take(&mut *data),
            })
            .await
            .map_err(crate::cluster::status_error)
            .map(tonic::Response::into_inner)
    })?;
    print_created("config", ctx.output(), info)
}
