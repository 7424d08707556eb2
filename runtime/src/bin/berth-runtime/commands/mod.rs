//! One module per subcommand; each parses its flags and calls the library.

pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod resume;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

use std::path::Path;

use crate::Command;

/// Runs `command`; the exit code on success.
pub fn dispatch(root: &Path, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Create(args) => create::run(root, args),
        Command::Start(args) => start::run(root, args),
        Command::State(args) => state::run(root, args),
        Command::Kill(args) => kill::run(root, args),
        Command::Delete(args) => delete::run(root, args),
        Command::Run(args) => run::run(root, args),
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
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitWith {}
