//! The `berth` command: a thin layer over berth's libraries, one file per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod auth;
mod cluster;
mod commands;
mod compare;
mod container;
mod output;
mod progress;
mod remote;

/// berth: containers without a hypervisor, and a small cluster to run them on.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
struct Cli {
    /// Where images, layers and container state live.
    #[arg(
        long,
        global = true,
        env = "BERTH_DATA_DIR",
        default_value = "/var/lib/berth"
    )]
    data_dir: PathBuf,

    /// Log filter for diagnostics on stderr (e.g. `debug`, `berth_images=trace`).
    #[arg(
        long,
        global = true,
        env = "BERTH_LOG",
        default_value = "warn,libcgroups=error"
    )]
    log: String,

    #[command(flatten)]
    credentials: auth::CredentialArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage images: import, pull, build, list, inspect, unpack, remove, prune.
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Run a command in a new container from an image.
    Run(commands::run::Args),
    /// List containers.
    Ps(commands::ps::Args),
    /// Stop a running container.
    Stop(commands::stop::Args),
    /// Remove containers.
    Rm(commands::rm::Args),
    /// Show a detached container's output.
    Logs(commands::logs::Args),
    /// Run a command in a running container.
    Exec(commands::exec::Args),
    /// Explain what isolates a running container: namespaces, cgroups, mounts, capabilities,
    /// seccomp and uid mapping, read from /proc.
    Explain(commands::explain::Args),
    /// Apply a deployment spec (TOML) on the cluster; --wait follows the rollout
    /// (exit 0 complete, 1 failed/rolled back/rejected, 3 awaiting approval, 4 timeout).
    Deploy(commands::deploy::Args),
    /// Show deployments, or one deployment with its replicas.
    Status(commands::status::Args),
    /// Let a rollout that awaits approval go on.
    Approve(commands::approve::Args),
    /// End a rollout that awaits approval; the stable revision stays.
    Reject(commands::reject::Args),
    /// Roll a deployment back to an earlier revision.
    Rollback(commands::rollback::Args),
    /// Set a deployment's replica count.
    Scale(commands::scale::Args),
    /// Delete a deployment and its containers.
    Delete(commands::delete::Args),
    /// List the cluster's nodes.
    Nodes(commands::nodes::Args),
    /// Show a deployment's revisions.
    History(commands::history::Args),
    /// Run a one-node cluster here: berth-scheduler and berth-agent, stopped cleanly on Ctrl-C.
    Up(commands::up::Args),
    #[command(about = "Run one workload as a container and as a qemu VM, and compare them")]
    Compare(commands::compare::Args),
    /// Create the cluster CA and issue certificates for mutual TLS.
    #[command(subcommand)]
    Certs(commands::certs::CertsCommand),
    /// Manage the scheduler's bearer tokens for pipelines and people: create, ls, revoke.
    #[command(subcommand)]
    Token(commands::token::TokenCommand),
}

/// What every subcommand gets besides its own arguments.
#[derive(Debug)]
pub struct Context {
    pub data_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    auth::init(cli.credentials);
    let ctx = Context {
        data_dir: cli.data_dir,
    };
    let result = match cli.command {
        Command::Image(cmd) => commands::image::run(cmd, &ctx).map(|()| 0),
        Command::Run(args) => commands::run::run(args, &ctx),
        Command::Ps(args) => commands::ps::run(args, &ctx).map(|()| 0),
        Command::Stop(args) => commands::stop::run(args, &ctx).map(|()| 0),
        Command::Rm(args) => commands::rm::run(args, &ctx).map(|()| 0),
        Command::Logs(args) => commands::logs::run(args, &ctx).map(|()| 0),
        Command::Exec(args) => commands::exec::run(args, &ctx),
        Command::Explain(args) => commands::explain::run(args, &ctx).map(|()| 0),
        Command::Deploy(args) => commands::deploy::run(args, &ctx),
        Command::Status(args) => commands::status::run(args, &ctx).map(|()| 0),
        Command::Approve(args) => commands::approve::run(args, &ctx),
        Command::Reject(args) => commands::reject::run(args, &ctx).map(|()| 0),
        Command::Rollback(args) => commands::rollback::run(args, &ctx),
        Command::Scale(args) => commands::scale::run(args, &ctx).map(|()| 0),
        Command::Delete(args) => commands::delete::run(args, &ctx).map(|()| 0),
        Command::Nodes(args) => commands::nodes::run(args, &ctx).map(|()| 0),
        Command::History(args) => commands::history::run(args, &ctx).map(|()| 0),
        Command::Up(args) => commands::up::run(args, &ctx),
        Command::Compare(args) => commands::compare::run(args, &ctx).map(|()| 0),
        Command::Certs(cmd) => commands::certs::run(cmd, &ctx).map(|()| 0),
        Command::Token(cmd) => commands::token::run(cmd, &ctx).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(err) => {
            // One line: the error and its causes, outermost first.
            eprintln!("berth: {}", chain(&err));
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn chain(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        // thiserror messages often embed their source already; do not repeat it.
        if parts.last().is_none_or(|prev| !prev.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}
