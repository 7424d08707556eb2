//! `berth secret ...`: values the scheduler keeps encrypted (AES-256-GCM envelopes under the
//! key of `--secrets-key`) and delivers only to nodes running a replica that uses them. No
//! subcommand ever prints a value. One file per subcommand.

use clap::Subcommand;

use crate::Context;

mod create;
pub(crate) mod init_key;
mod inspect;
mod ls;
mod rm;
mod rotate_key;
mod update;

#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Create a secret from a file or standard input (at most 1 MiB): version 1.
    Create(create::Args),
    /// Store a new version; every deployment using the secret rolls to it.
    Update(update::Args),
    /// List secrets (never their values).
    #[command(alias = "list")]
    Ls(ls::Args),
    /// Show a secret's metadata (never its value).
    Inspect(inspect::Args),
    /// Remove a secret no deployment uses.
    #[command(alias = "remove")]
    Rm(rm::Args),
    /// Write a new key-encryption key file for berth-scheduler --secrets-key (mode 0600).
    InitKey(init_key::Args),
    /// Re-wrap every secret with a new key file on the scheduler's host, which the scheduler
    /// uses from then on.
    RotateKey(rotate_key::Args),
}

pub(crate) fn run(command: SecretCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        SecretCommand::Create(args) => create::run(args, ctx),
        SecretCommand::Update(args) => update::run(args, ctx),
        SecretCommand::Ls(args) => ls::run(args, ctx),
        SecretCommand::Inspect(args) => inspect::run(args, ctx),
        SecretCommand::Rm(args) => rm::run(args, ctx),
        SecretCommand::InitKey(args) => init_key::run(args, ctx),
        SecretCommand::RotateKey(args) => rotate_key::run(args, ctx),
    }
}
