//! `berth secret update NAME [--from-file F | -]`: a new version; the deployments whose
//! current revision uses the secret get a new revision and roll.

use berth_proto::v1::PutFileRequest;

use crate::Context;
use crate::files::{ValueSource, print_updated, with_secrets};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(value_parser = super::check_name)]
    name: String,
    #[command(flatten)]
    source: ValueSource,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let name = args.name.clone();
    let mut data = args.source.read(&format!("secret {name}"))?;
    let reply = with_secrets(ctx, async |mut client| {
        client
            .update_secret(PutFileRequest {
                name: args.name,
                // Moved, not copied. tonic encodes the request into its own buffers and drops
                // it, which no caller can wipe; every buffer of ours is Zeroizing.
                data: std::mem::take(&mut *data),
            })
            .await
            .map_err(crate::cluster::status_error)
            .map(tonic::Response::into_inner)
    })?;
    print_updated("secret", &name, ctx.output(), reply)
}
