//! The `berth` command: a thin layer over berth's libraries, one file per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod auth;
mod cluster;
mod commands;
mod compare;
mod container;
mod exit;
mod files;
mod output;
mod progress;
mod remote;

/// The exit statuses (see `exit`), shown under `berth --help`.
const EXIT_STATUS_HELP: &str = "Exit status: 0 success (--wait: rollout complete); 1 failed \
(--wait: rollout failed, rolled back or rejected); 2 usage or invalid argument; 3 awaiting \
approval (--wait --stop-at-approval); 4 timeout or deadline exceeded; 5 not found; 6 conflict \
(already exists, precondition failed, changed meanwhile); 7 unavailable (cannot reach the \
scheduler, agent or registry); 8 unauthenticated or permission denied. `run` and `exec` exit \
with the container process's code.";

/// berth: containers without a hypervisor, and a small cluster to run them on.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about,
    propagate_version = true,
    after_help = EXIT_STATUS_HELP
)]
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

    #[command(flatten)]
    cluster: cluster::ClusterFlags,

    /// The environment cluster commands act in (staging, production, ...). Goes before or
    /// after the subcommand, except with `run`, `exec` and `image build`, whose own --env sets
    /// a variable: there, before it.
    #[arg(
        long = "env",
        env = "BERTH_ENV",
        default_value = cluster::DEFAULT_ENVIRONMENT,
        value_name = "ENV"
    )]
    environment: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage images: import, pull, build, list, inspect, unpack, remove, prune.
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Build an image from a Containerfile and a context directory.
    Build(commands::build::Args),
    /// Run a command in a new container from an image.
    Run(commands::run::Args),
    /// Manage named volumes: create, ls, inspect, rm, prune (ls --cluster: the scheduler's).
    #[command(subcommand)]
    Volume(commands::volume::VolumeCommand),
    /// Manage the cluster's configs (files specs mount read-only): create, update, ls,
    /// inspect, rm. An update rolls the deployments that use the config.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// Manage the cluster's secrets (encrypted at rest, never printed): create, update, ls,
    /// inspect, rm, init-key, rotate-key.
    #[command(subcommand)]
    Secret(commands::secret::SecretCommand),
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
    /// List the services: name, virtual IP, ports and ready endpoints.
    Services(commands::services::Args),
    /// Show a deployment's revisions.
    History(commands::history::Args),
    /// Show what runs where: per app and environment, the release serving (image by digest),
    /// then the releases recorded, newest first.
    Releases(commands::releases::Args),
    /// Show the audit log: who applied, approved, rejected, rolled back, scaled, deleted or
    /// promoted what, when, from which release to which, and the outcome.
    Audit(commands::audit::Args),
    /// Show the cluster's events (nodes ready or not, container states, rollout steps,
    /// approvals, promotions, audit entries); --follow streams them, --since REV resumes.
    Events(commands::events::Args),
    /// Manage environments (staging, production, ...): create, ls, rm.
    #[command(subcommand)]
    Env(commands::env::EnvCommand),
    /// Apply the release serving in one environment to another (--from staging --to
    /// production), under the target's approval policy.
    Promote(commands::promote::Args),
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

/// What every subcommand gets besides its own arguments: the global flags.
#[derive(Debug)]
pub struct Context {
    pub data_dir: PathBuf,
    /// `--scheduler` or BERTH_SCHEDULER, when given (see [`Context::scheduler`]).
    pub scheduler: Option<String>,
    /// `--output`, when given (see [`Context::output`]).
    pub output: Option<output::OutputFormat>,
}

impl Context {
    /// The scheduler to talk to: `--scheduler`, or the local default.
    pub fn scheduler(&self) -> &str {
        self.scheduler
            .as_deref()
            .unwrap_or(cluster::DEFAULT_SCHEDULER)
    }

    /// `--output`, tables unless told.
    pub fn output(&self) -> output::OutputFormat {
        self.output.unwrap_or_default()
    }
}

fn main() -> ExitCode {
    let (cli, env_on_command_line) = parse_command_line(std::env::args_os().collect());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    auth::init(cli.credentials);
    cluster::set_environment(&cli.environment);
    if env_on_command_line {
        cluster::set_environment_filter(&cli.environment);
    }
    let ctx = Context {
        data_dir: cli.data_dir,
        scheduler: cli.cluster.scheduler,
        output: cli.cluster.output,
    };
    let result = match cli.command {
        Command::Image(cmd) => commands::image::run(cmd, &ctx).map(|()| 0),
        Command::Build(args) => commands::build::run(args, &ctx).map(|()| 0),
        Command::Run(args) => commands::run::run(args, &ctx),
        Command::Volume(cmd) => commands::volume::run(cmd, &ctx).map(|()| 0),
        Command::Config(cmd) => commands::config::run(cmd, &ctx).map(|()| 0),
        Command::Secret(cmd) => commands::secret::run(cmd, &ctx).map(|()| 0),
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
        Command::Services(args) => commands::services::run(args, &ctx).map(|()| 0),
        Command::History(args) => commands::history::run(args, &ctx).map(|()| 0),
        Command::Releases(args) => commands::releases::run(args, &ctx).map(|()| 0),
        Command::Audit(args) => commands::audit::run(args, &ctx).map(|()| 0),
        Command::Events(args) => commands::events::run(args, &ctx).map(|()| 0),
        Command::Env(cmd) => commands::env::run(cmd, &ctx).map(|()| 0),
        Command::Promote(args) => commands::promote::run(args, &ctx),
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
            let code = exit::for_kind(exit::kind_of(&err));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

/// Subcommands whose arguments may carry the global `--env ENV` (the others have an --env of
/// their own, or no cluster at all).
const ENV_COMMANDS: [&str; 19] = [
    "deploy", "status", "approve", "reject", "rollback", "scale", "delete", "history", "services",
    "ps", "logs", "explain", "nodes", "env", "promote", "volume", "config", "secret", "token",
];

/// The command line (after [`hoist_env_flag`]), and whether `--env` was given on it rather than
/// by BERTH_ENV or the default: `berth --env X audit` then filters as `berth audit --env X`.
fn parse_command_line(args: Vec<std::ffi::OsString>) -> (Cli, bool) {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches_from(hoist_env_flag(args));
    let on_command_line =
        matches.value_source("environment") == Some(clap::parser::ValueSource::CommandLine);
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => (cli, on_command_line),
        Err(e) => e.exit(),
    }
}

/// `berth CMD ... --env ENV ...` as `berth --env ENV CMD ...`, for the subcommands in
/// [`ENV_COMMANDS`]: `--env` is a top-level flag (it cannot be a clap global one, since
/// `exec --env` and `image build --env` set variables), given after the subcommand too.
fn hoist_env_flag(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(cmd) = args
        .iter()
        .position(|a| a.to_str().is_some_and(|a| ENV_COMMANDS.contains(&a)))
    else {
        return args;
    };
    // Only when that word is the subcommand: nothing before it names another one.
    let other = args[1..cmd].iter().any(|a| {
        a.to_str()
            .is_some_and(|a| matches!(a, "exec" | "image" | "build" | "run"))
    });
    if other {
        return args;
    }
    let mut hoisted = Vec::new();
    let mut i = cmd + 1;
    while i < args.len() {
        match args[i].to_str() {
            Some("--") => break,
            Some("--env") if i + 1 < args.len() => {
                hoisted.extend(args.drain(i..i + 2));
            }
            Some(a) if a.starts_with("--env=") => hoisted.push(args.remove(i)),
            _ => i += 1,
        }
    }
    args.splice(1..1, hoisted);
    args
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::output::OutputFormat;

    /// Parses `berth ARGS...` as main does, without the environment's say.
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The global flags, once before the subcommand and once after it.
    const GLOBAL: [&str; 12] = [
        "--scheduler",
        "10.0.0.1:7700",
        "--output",
        "json",
        "--data-dir",
        "/tmp/berth-flags",
        "--tls-ca",
        "/tmp/ca.pem",
        "--token",
        "berth_x_y",
        "--tls-cert",
        "/tmp/c.pem",
    ];

    #[test]
    fn global_flags_go_before_or_after_any_subcommand() {
        // Needs no BERTH_* variable: the flags given must win over whatever is set.
        let commands: [&[&str]; 20] = [
            &["nodes"],
            &["status"],
            &["status", "hello"],
            &["deploy", "-f", "app.toml", "--wait"],
            &["history", "hello"],
            &["ps", "-a"],
            &["logs", "hello"],
            &["scale", "hello", "3"],
            &["token", "ls"],
            &["token", "create", "--role", "viewer"],
            &["image", "ls"],
            &["certs", "init"],
            &["volume", "ls"],
            &["run", "-v", "data:/d", "--tmpfs", "/t", "busybox"],
            &["volume", "ls", "--cluster"],
            &["config", "ls"],
            &["config", "create", "app-conf", "--from-file", "app.conf"],
            &["config", "inspect", "app-conf", "--version", "2"],
            &["secret", "create", "db", "-"],
            &["secret", "rotate-key", "--new-key", "/k"],
        ];
        for command in commands {
            let before: Vec<&str> = GLOBAL.iter().chain(command.iter()).copied().collect();
            let after: Vec<&str> = command.iter().chain(GLOBAL.iter()).copied().collect();
            for args in [before, after] {
                let cli = parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                assert_eq!(
                    cli.cluster.scheduler.as_deref(),
                    Some("10.0.0.1:7700"),
                    "{args:?}"
                );
                assert_eq!(cli.cluster.output, Some(OutputFormat::Json), "{args:?}");
                assert_eq!(cli.data_dir, PathBuf::from("/tmp/berth-flags"), "{args:?}");
                assert_eq!(
                    cli.credentials.tls_ca,
                    Some(PathBuf::from("/tmp/ca.pem")),
                    "{args:?}"
                );
                assert_eq!(
                    cli.credentials.token.as_deref(),
                    Some("berth_x_y"),
                    "{args:?}"
                );
            }
        }
    }

    /// `--env` before or after a cluster subcommand, or from BERTH_ENV's default; `exec` and
    /// `image build` keep their own --env.
    #[test]
    fn env_goes_before_or_after_cluster_commands() {
        let hoisted = |args: &[&str]| {
            let argv = std::iter::once("berth")
                .chain(args.iter().copied())
                .map(std::ffi::OsString::from)
                .collect();
            Cli::try_parse_from(hoist_env_flag(argv))
        };
        for args in [
            &["--env", "staging", "status"][..],
            &["status", "--env", "staging"],
            &["status", "hello", "--env=staging"],
            &[
                "-o", "json", "deploy", "-f", "a.toml", "--env", "staging", "--wait",
            ],
            &[
                "promote", "hello", "--from", "a", "--to", "b", "--env", "staging",
            ],
            &["env", "ls", "--env", "staging"],
            &[
                "--env", "staging", "exec", "hello", "--env", "A=1", "--", "true",
            ],
        ] {
            let cli = hoisted(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.environment, "staging", "{args:?}");
        }
        let cli = hoisted(&["exec", "hello", "--env", "A=1", "--", "true"]).unwrap();
        assert_eq!(cli.environment, "default");
        let cli = hoisted(&["status", "--", "--env", "x"]);
        assert!(cli.is_err(), "after --, --env is not hoisted");
    }

    /// `berth --env X audit` narrows audit and events as their own `--env` does; without a
    /// top-level `--env` on the command line they show every environment.
    #[test]
    fn a_top_level_env_on_the_command_line_is_told_apart() {
        let argv = |args: &[&str]| {
            std::iter::once("berth")
                .chain(args.iter().copied())
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
        };
        let (cli, given) = parse_command_line(argv(&["--env", "staging", "audit"]));
        assert!(given);
        assert_eq!(cli.environment, "staging");
        let (_, given) = parse_command_line(argv(&["status", "--env", "staging"]));
        assert!(given, "hoisted from after the subcommand");
        let (_, given) = parse_command_line(argv(&["audit", "--env", "staging"]));
        assert!(!given, "audit's own --env is its own flag");
    }

    #[test]
    fn config_and_secret_arguments_are_checked() {
        let cli = parse(&["secret", "update", "db", "-f", "/tmp/pw"]).unwrap();
        let Command::Secret(_) = cli.command else {
            panic!("not secret: {:?}", cli.command);
        };
        for (args, want) in [
            (&["config", "create", "a/b", "-f", "x"][..], "a/b"),
            (
                &["secret", "create", "db", "-f", "x", "-"],
                "cannot be used with",
            ),
            (&["config", "inspect", "c", "--version", "0"], "--version"),
            (&["secret", "rotate-key"], "--new-key"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn short_output_flag_and_unknown_values() {
        let cli = parse(&["-o", "json", "nodes"]).unwrap();
        assert_eq!(cli.cluster.output, Some(OutputFormat::Json));
        let cli = parse(&["nodes", "-o", "table"]).unwrap();
        assert_eq!(cli.cluster.output, Some(OutputFormat::Table));
        let err = parse(&["--output", "yaml", "nodes"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("yaml"), "{err}");
        // Every subcommand still parses its own flags.
        let cli = parse(&[
            "--scheduler",
            "h:1",
            "deploy",
            "-f",
            "x.toml",
            "--timeout",
            "90s",
        ])
        .unwrap();
        let Command::Deploy(_) = cli.command else {
            panic!("not deploy: {:?}", cli.command);
        };
    }
}
