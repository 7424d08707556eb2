//! `berth secret inspect NAME`: a secret's metadata (versions, size, key id, the deployments
//! using it). No RPC returns a secret's value, so there is none to print.

use berth_proto::v1::GetFileRequest;

use crate::Context;
use crate::files::{FileRow, print_details, with_secrets};
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(value_parser = crate::files::parse_name)]
    name: String,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let request = GetFileRequest {
        name: args.name,
        version: 0,
    };
    let info = with_secrets(ctx, async |mut client| client.get_secret(request).await)?;
    let row = FileRow::from(info);
    match ctx.output() {
        OutputFormat::Json => print_json(&row),
        OutputFormat::Table => {
            print_details(&row);
            Ok(())
        }
    }
}
