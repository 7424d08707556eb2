//! `berth secret inspect NAME`: a secret's metadata (versions, size, key id, the deployments
//! using it). No RPC returns a secret's value, so there is none to print.

use berth_proto::v1::GetFileRequest;

use crate::Context;
use crate::files::{FileRow, print_details, with_secrets};
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(value_parser = super::check_name)]
    name: String,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let info = with_secrets(ctx, async |mut client| {
        client
            .get_secret(GetFileRequest {
                name: args.name,
                version: 0,
            })
            .await
            .map_err(crate::cluster::status_error)
            .map(tonic::Response::into_inner)
    })?;
    let row = FileRow::from(info);
    match ctx.output() {
        OutputFormat::Json => print_json(&row),
        OutputFormat::Table => {
            print_details(&row);
            Ok(())
        }
    }
}
