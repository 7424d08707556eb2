//! `berth secret create NAME [--from-file F | -]`: a new secret, version 1; the value is read from the file or standard input, sent once and never printed.

use berth_proto::v1::PutFileRequest;

use crate::Context;
use crate::files::{ValueSource, print_created, with_secrets};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The secret's name, as specs name it in `secrets = [{ name = ... }]` and `env_from_secret`.
    #[arg(value_parser = super::check_name)]
    name: String,
    #[command(flatten)]
    source: ValueSource,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let mut data = args.source.read(&format!("secret {}", args.name))?;
    let info = with_secrets(ctx, async |mut client| {
        client
            .create_secret(PutFileRequest {
                name: args.name,
                // Moved, not copied. tonic encodes the request into its own buffers and drops
                // it, which no caller can wipe; every buffer of ours is Zeroizing.
                data: std::mem::take(&mut *data),
            })
            .await
            .map_err(crate::cluster::status_error)
            .map(tonic::Response::into_inner)
    })?;
    print_created("secret", ctx.output(), info)
}
