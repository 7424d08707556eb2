//! `berth config ...`: versioned files that deployment specs mount read-only, kept by the
//! scheduler; updating one rolls the deployments that use it. One file per subcommand.

use clap::Subcommand;

use crate::Context;

mod create;
mod inspect;
mod ls;
mod rm;
mod update;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Create a config from a file or standard input (at most 1 MiB): version 1.
    Create(create::Args),
    /// Store a new version; every deployment using the config rolls to it.
    Update(update::Args),
    /// List configs.
    #[command(alias = "list")]
    Ls(ls::Args),
    /// Show a config's metadata and content (the newest version, or --version N).
    // Its --version is the config's: berth's own version is `berth --version`.
    #[command(disable_version_flag = true)]
    Inspect(inspect::Args),
    /// Remove a config no deployment uses.
    #[command(alias = "remove")]
    Rm(rm::Args),
}

pub(crate) fn run(command: ConfigCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Create(args) => create::run(args, ctx),
        ConfigCommand::Update(args) => update::run(args, ctx),
        ConfigCommand::Ls(args) => ls::run(args, ctx),
        ConfigCommand::Inspect(args) => inspect::run(args, ctx),
        ConfigCommand::Rm(args) => rm::run(args, ctx),
    }
}
