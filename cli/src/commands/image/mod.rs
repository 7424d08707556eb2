//! `berth image ...`: one file per subcommand.

use clap::Subcommand;

use crate::Context;

mod inspect;
mod ls;
mod prune;
mod rm;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images in the store.
    #[command(alias = "list")]
    Ls(ls::Args),
    /// Show an image's manifest and config.
    Inspect(inspect::Args),
    /// Remove image names; blobs stay until `prune`.
    #[command(alias = "remove")]
    Rm(rm::Args),
    /// Delete blobs and unpacked layers that no image refers to.
    Prune(prune::Args),
}

pub fn run(command: ImageCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        ImageCommand::Ls(args) => ls::run(args, ctx),
        ImageCommand::Inspect(args) => inspect::run(args, ctx),
        ImageCommand::Rm(args) => rm::run(args, ctx),
        ImageCommand::Prune(args) => prune::run(args, ctx),
    }
}

/// Opens the store under the context's data dir.
fn open_store(ctx: &Context) -> anyhow::Result<berth_images::Store> {
    use anyhow::Context as _;
    berth_images::Store::open(&ctx.data_dir)
        .with_context(|| format!("opening the image store in {}", ctx.data_dir.display()))
}
