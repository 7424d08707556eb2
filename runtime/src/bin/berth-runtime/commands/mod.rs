//! One module per subcommand; each parses its flags and calls the library.

pub(crate) mod create;
pub(crate) mod delete;
pub(crate) mod events;
pub(crate) mod exec;
pub(crate) mod features;
pub(crate) mod kill;
pub(crate) mod list;
pub(crate) mod pause;
pub(crate) mod ps;
pub(crate) mod resume;
pub(crate) mod run;
pub(crate) mod spec;
pub(crate) mod start;
pub(crate) mod state;
pub(crate) mod update;

use std::path::Path;

use crate::Command;

/// Runs `command`; the exit code on success. `systemd_cgroup` matters to create and run only.
pub(crate) fn dispatch(root: &Path, command: Command, systemd_cgroup: bool) -> anyhow::Result<u8> {
    match command {
        Command::Create(args) => create::run(root, args, systemd_cgroup),
        Command::Start(args) => start::run(root, args),
        Command::State(args) => state::run(root, args),
        Command::Kill(args) => kill::run(root, args),
        Command::Delete(args) => delete::run(root, args),
        Command::Run(args) => run::run(root, args, systemd_cgroup),
        Command::Spec(args) => spec::run(args),
        Command::List(args) => list::run(root, args),
        Command::Ps(args) => ps::run(root, args),
        Command::Pause(args) => pause::run(root, args),
        Command::Resume(args) => resume::run(root, args),
        Command::Events(args) => events::run(root, args),
        Command::Exec(args) => exec::run(root, args),
        Command::Update(args) => update::run(root, args),
        Command::Features => features::run(),
    }
    .map(|()| 0)
    .or_else(|e| match e.downcast::<ExitWith>() {
        Ok(ExitWith(code)) => Ok(code),
        Err(e) => Err(e),
    })
}

/// A command that succeeded but must exit non-zero (run's container exit code).
#[derive(Debug)]
pub(crate) struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitWith {}
