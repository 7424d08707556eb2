//! `berth volume ...`: named volumes on this machine, one file per subcommand.

use clap::Subcommand;

use crate::Context;

mod create;
mod inspect;
mod ls;
mod prune;
mod rm;

#[derive(Debug, Subcommand)]
pub(crate) enum VolumeCommand {
    /// Create a named volume (`berth run -v NAME:/path` also makes one on first use).
    Create(create::Args),
    /// List volumes.
    #[command(alias = "list")]
    Ls(ls::Args),
    /// Show volumes: mountpoint, created, labels, the containers using them.
    Inspect(inspect::Args),
    /// Remove volumes; one in use only with -f.
    #[command(alias = "remove")]
    Rm(rm::Args),
    /// Remove every volume no container uses.
    Prune(prune::Args),
}

pub(crate) fn run(command: VolumeCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        VolumeCommand::Create(args) => create::run(args, ctx),
        VolumeCommand::Ls(args) => ls::run(args, ctx),
        VolumeCommand::Inspect(args) => inspect::run(args, ctx),
        VolumeCommand::Rm(args) => rm::run(args, ctx),
        VolumeCommand::Prune(args) => prune::run(args, ctx),
    }
}

/// Opens the volume store under the context's data dir.
fn open_store(ctx: &Context) -> anyhow::Result<berth_images::volumes::VolumeStore> {
    use anyhow::Context as _;
    berth_images::volumes::VolumeStore::open(&ctx.data_dir)
        .with_context(|| format!("opening the volume store in {}", ctx.data_dir.display()))
}
