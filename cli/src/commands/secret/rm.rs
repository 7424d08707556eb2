//! `berth secret rm NAME`: remove a secret and all its versions; the scheduler refuses while a deployment uses it.

use berth_proto::v1::DeleteFileRequest;

use crate::Context;
use crate::files::with_secrets;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(value_parser = super::check_name)]
    name: String,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let name = args.name.clone();
    with_secrets(ctx, async |mut client| {
        client
            .delete_secret(DeleteFileRequest { name: args.name })
            .await
            .map_err(crate::cluster::status_error)
            .map(|_| ())
    })?;
    match ctx.output() {
        OutputFormat::Json => print_json(&serde_json::json!({ "removed": name })),
        OutputFormat::Table => {
            println!("removed secret {name}");
            Ok(())
        }
    }
}
