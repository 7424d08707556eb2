//! `berth image ...`: one file per subcommand.

use clap::Subcommand;

use crate::Context;

pub(crate) mod build;
mod import;
mod inspect;
mod ls;
mod prune;
mod pull;
mod push;
mod rm;
pub(crate) mod summary;
mod tag;
mod unpack;

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// List images in the store.
    #[command(alias = "list")]
    Ls(ls::Args),
    /// Build an image with one new layer made from a directory.
    Build(build::Args),
    /// Import an OCI image layout, an oci-archive or a docker-archive.
    Import(import::Args),
    /// Show an image's manifest and config.
    Inspect(inspect::Args),
    /// Pull an image from a registry.
    Pull(pull::Args),
    /// Push an image from the store to a registry.
    Push(push::Args),
    /// Give an image another name.
    Tag(tag::Args),
    /// Remove image names; blobs stay until `prune`.
    #[command(alias = "remove")]
    Rm(rm::Args),
    /// Delete blobs and unpacked layers that no image refers to.
    Prune(prune::Args),
    /// Unpack an image's layers, flattened, into a root filesystem directory.
    Unpack(unpack::Args),
}

pub(crate) fn run(command: ImageCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        ImageCommand::Ls(args) => ls::run(args, ctx),
        ImageCommand::Build(args) => build::run(args, ctx),
        ImageCommand::Import(args) => import::run(args, ctx),
        ImageCommand::Inspect(args) => inspect::run(args, ctx),
        ImageCommand::Pull(args) => pull::run(args, ctx),
        ImageCommand::Push(args) => push::run(args, ctx),
        ImageCommand::Tag(args) => tag::run(args, ctx),
        ImageCommand::Rm(args) => rm::run(args, ctx),
        ImageCommand::Prune(args) => prune::run(args, ctx),
        ImageCommand::Unpack(args) => unpack::run(args, ctx),
    }
}

/// Opens the store under the context's data dir.
pub(crate) fn open_store(ctx: &Context) -> anyhow::Result<berth_images::Store> {
    use anyhow::Context as _;
    berth_images::Store::open(&ctx.data_dir)
        .with_context(|| format!("opening the image store in {}", ctx.data_dir.display()))
}
