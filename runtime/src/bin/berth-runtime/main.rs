//! `berth-runtime`: runc's command line over the berth_runtime library. Errors become one
//! line on stderr (and a log record with `--log`) and a non-zero exit.

mod commands;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "berth-runtime",
    about = "OCI runtime (runc-compatible command line)",
    disable_version_flag = true
)]
struct Cli {
    /// Directory holding container state.
    #[arg(long, global = true, default_value = berth_runtime::state::DEFAULT_ROOT)]
    root: PathBuf,
    /// Append log records to this file (stderr when absent).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log record format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log debug records too.
    #[arg(long, global = true)]
    debug: bool,
    /// Place cgroups through systemd: cgroupsPath is "slice:prefix:name", e.g.
    /// "system.slice:berth:ID" (the default). Read by create and run; later commands use the
    /// driver create recorded, so the flag changes nothing for them.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Rootless mode (accepted as runc takes it; this runtime runs as root here).
    #[arg(long, global = true, value_parser = ["auto", "true", "false"])]
    rootless: Option<String>,
    /// Print the version, commit and OCI spec version.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container: set up and waiting for `start`.
    Create(commands::create::Args),
    /// Start the process of a created container.
    Start(commands::start::Args),
    /// Print the OCI state of a container as JSON.
    State(commands::state::Args),
    /// Send a signal to a container's init (or all its processes).
    Kill(commands::kill::Args),
    /// Delete a container and its resources.
    Delete(commands::delete::Args),
    /// Create, start and wait for a container; exit with its code.
    Run(commands::run::Args),
    /// Write a default config.json.
    Spec(commands::spec::Args),
    /// List containers.
    List(commands::list::Args),
    /// List the processes of a container.
    Ps(commands::ps::Args),
    /// Freeze every process of a container.
    Pause(commands::pause::Args),
    /// Thaw a paused container.
    Resume(commands::resume::Args),
    /// Print resource usage of a container.
    Events(commands::events::Args),
    /// Run another process in a running container.
    Exec(commands::exec::Args),
    /// Change a container's resource limits.
    Update(commands::update::Args),
    /// Print the runtime's features as JSON.
    Features,
}

/// `--version`: three lines, as runc prints them.
fn print_version() {
    println!("berth-runtime version {}", env!("CARGO_PKG_VERSION"));
    println!(
        "commit: {}",
        option_env!("BERTH_COMMIT").unwrap_or("unknown")
    );
    println!("spec: {}", berth_runtime::spec::OCI_VERSION);
}

/// `Cli::parse()` without freeing clap's command tree: it holds every argument of every
/// subcommand, and freeing it took a tenth of the instructions of a short call such as
/// `state` (callgrind). The process ends within milliseconds anyway.
fn parse_cli() -> Cli {
    let mut command = Cli::command();
    let parsed = match command.try_get_matches_from_mut(std::env::args_os()) {
        Ok(mut matches) => {
            Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
        }
        Err(e) => Err(e),
    };
    std::mem::forget(command);
    parsed.unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    // Errors are printed as one line, never with a backtrace: RUST_BACKTRACE in the caller's
    // environment must not make anyhow capture one per error (in the static build the first
    // capture sorts every unwind entry of the binary, 14 million instructions measured).
    // Panics still honour RUST_BACKTRACE. Hooks and the container get their own environment.
    // SAFETY: nothing else runs yet: the process is single-threaded here.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    let cli = parse_cli();
    if cli.version {
        print_version();
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        eprintln!("berth-runtime: a command is required (see --help)");
        return ExitCode::FAILURE;
    };
    let logger = logging::Logger::new(
        cli.log.as_deref(),
        cli.log_format == LogFormat::Json,
        cli.debug,
    );
    let result = commands::dispatch(&cli.root, command, cli.systemd_cgroup);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            logger.error(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
