//! Reading a Containerfile into stages of steps with taiki-e's `parse-dockerfile`, keeping
//! each step's line; instructions berth cannot build yet are refused here, by name and line.

use parse_dockerfile::{Command, Flag, Instruction, JsonOrStringArray, Source, UnescapedString};

use super::error::{ContainerfileError, Result};

/// A parsed Containerfile.
#[derive(Debug, Clone)]
pub(crate) struct Containerfile {
    /// `ARG` lines before the first `FROM` (raw `NAME[=default]` text and its line).
    pub global_args: Vec<(usize, String)>,
    pub stages: Vec<Stage>,
}

/// `FROM base [AS name]` and the steps under it.
#[derive(Debug, Clone)]
pub(crate) struct Stage {
    pub line: usize,
    /// The image reference as written (ARGs not yet expanded), or `scratch`.
    pub base: String,
    pub name: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub line: usize,
    pub kind: StepKind,
}

/// A CMD or ENTRYPOINT: the exec form as given, or the shell form run by `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommandForm {
    Exec(Vec<String>),
    Shell(String),
}

impl CommandForm {
    pub(crate) fn argv(&self) -> Vec<String> {
        match self {
            Self::Exec(argv) => argv.clone(),
            Self::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
        }
    }
}

/// COPY or ADD of local files.
#[derive(Debug, Clone)]
pub(crate) struct CopyStep {
    pub add: bool,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub sources: Vec<String>,
    pub dest: String,
}

/// One instruction; text fields are raw (ARG and ENV expansion happens when planning).
#[derive(Debug, Clone)]
pub(crate) enum StepKind {
    Copy(CopyStep),
    /// RUN: the command as written (the shell expands a shell-form line, not berth).
    Run(CommandForm),
    Env(String),
    Arg(String),
    Label(String),
    Workdir(String),
    User(String),
    Cmd(CommandForm),
    Entrypoint(CommandForm),
    Expose(Vec<String>),
    Volume(Vec<String>),
}

impl StepKind {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Copy(copy) if copy.add => "ADD",
            Self::Copy(_) => "COPY",
            Self::Run(_) => "RUN",
            Self::Env(_) => "ENV",
            Self::Arg(_) => "ARG",
            Self::Label(_) => "LABEL",
            Self::Workdir(_) => "WORKDIR",
            Self::User(_) => "USER",
            Self::Cmd(_) => "CMD",
            Self::Entrypoint(_) => "ENTRYPOINT",
            Self::Expose(_) => "EXPOSE",
            Self::Volume(_) => "VOLUME",
        }
    }
}

/// Parses `text` (read from `file`, named in errors).
pub(crate) fn parse(file: &str, text: &str) -> Result<Containerfile> {
    let parsed = parse_dockerfile::parse(text).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        ContainerfileError::Parse {
            file: file.to_string(),
            line,
            column,
            message: format!("{e:#}"),
            near: near(text, line, column),
        }
    })?;
    let line_of = |offset: usize| text[..offset].bytes().filter(|b| *b == b'\n').count() + 1;
    let mut file = Containerfile {
        global_args: Vec::new(),
        stages: Vec::new(),
    };
    for instruction in &parsed.instructions {
        let start = instruction_start(instruction);
        let line = line_of(start);
        if let Instruction::From(from) = instruction {
            if let Some(flag) = from.options.first() {
                return Err(bad_flag(line, "FROM", flag));
            }
            file.stages.push(Stage {
                line,
                base: from.image.value.to_string(),
                name: from.as_.as_ref().map(|(_, name)| name.value.to_string()),
                steps: Vec::new(),
            });
            continue;
        }
        let kind = step_kind(instruction, line)?;
        match file.stages.last_mut() {
            Some(stage) => stage.steps.push(Step { line, kind }),
            None => match kind {
                StepKind::Arg(text) => file.global_args.push((line, text)),
                other => {
                    return Err(ContainerfileError::Instruction {
                        line,
                        instruction: other.name().into(),
                        reason: "only ARG may come before the first FROM".into(),
                    });
                }
            },
        }
    }
    if file.stages.is_empty() {
        return Err(ContainerfileError::InvalidOption {
            option: "-f".into(),
            reason: "the Containerfile has no FROM instruction".into(),
        });
    }
    Ok(file)
}

/// Up to 20 characters of `line` from `column` (both 1-based), for pointing at an error.
fn near(text: &str, line: usize, column: usize) -> String {
    text.lines()
        .nth(line.saturating_sub(1))
        .map(|l| {
            l.chars()
                .skip(column.saturating_sub(1))
                .take(20)
                .collect::<String>()
        })
        .unwrap_or_default()
}

fn instruction_start(instruction: &Instruction<'_>) -> usize {
    match instruction {
        Instruction::Add(i) => i.add.span.start,
        Instruction::Arg(i) => i.arg.span.start,
        Instruction::Cmd(i) => i.cmd.span.start,
        Instruction::Copy(i) => i.copy.span.start,
        Instruction::Entrypoint(i) => i.entrypoint.span.start,
        Instruction::Env(i) => i.env.span.start,
        Instruction::Expose(i) => i.expose.span.start,
        Instruction::From(i) => i.from.span.start,
        Instruction::Healthcheck(i) => i.healthcheck.span.start,
        Instruction::Label(i) => i.label.span.start,
        Instruction::Maintainer(i) => i.maintainer.span.start,
        Instruction::Onbuild(i) => i.onbuild.span.start,
        Instruction::Run(i) => i.run.span.start,
        Instruction::Shell(i) => i.shell.span.start,
        Instruction::Stopsignal(i) => i.stopsignal.span.start,
        Instruction::User(i) => i.user.span.start,
        Instruction::Volume(i) => i.volume.span.start,
        Instruction::Workdir(i) => i.workdir.span.start,
        _ => 0,
    }
}

fn step_kind(instruction: &Instruction<'_>, line: usize) -> Result<StepKind> {
    let owned = |s: &UnescapedString<'_>| s.value.to_string();
    Ok(match instruction {
        Instruction::Copy(copy) => StepKind::Copy(copy_step(
            false,
            &copy.options,
            &copy.src,
            owned(&copy.dest),
            line,
        )?),
        Instruction::Add(add) => StepKind::Copy(copy_step(
            true,
            &add.options,
            &add.src,
            owned(&add.dest),
            line,
        )?),
        Instruction::Run(run) => {
            if let Some(flag) = run.options.first() {
                return Err(bad_flag(line, "RUN", flag));
            }
            StepKind::Run(run_command(&run.arguments, line)?)
        }
        Instruction::Env(env) => StepKind::Env(owned(&env.arguments)),
        Instruction::Arg(arg) => StepKind::Arg(owned(&arg.arguments)),
        Instruction::Label(label) => StepKind::Label(owned(&label.arguments)),
        Instruction::Workdir(workdir) => StepKind::Workdir(owned(&workdir.arguments)),
        Instruction::User(user) => StepKind::User(owned(&user.arguments)),
        Instruction::Cmd(cmd) => StepKind::Cmd(command_form(&cmd.arguments, line, "CMD")?),
        Instruction::Entrypoint(ep) => {
            StepKind::Entrypoint(command_form(&ep.arguments, line, "ENTRYPOINT")?)
        }
        Instruction::Expose(expose) => {
            StepKind::Expose(expose.arguments.iter().map(owned).collect())
        }
        Instruction::Volume(volume) => StepKind::Volume(match &volume.arguments {
            JsonOrStringArray::Json(paths) => paths.value.iter().map(owned).collect(),
            JsonOrStringArray::String(paths) => paths.iter().map(owned).collect(),
        }),
        // Refused rather than skipped: a build must not silently leave a step out.
        other => {
            return Err(ContainerfileError::Unsupported {
                instruction: unsupported_name(other).into(),
                line,
            });
        }
    })
}

fn unsupported_name(instruction: &Instruction<'_>) -> &'static str {
    match instruction {
        Instruction::Healthcheck(_) => "HEALTHCHECK",
        Instruction::Maintainer(_) => "MAINTAINER",
        Instruction::Onbuild(_) => "ONBUILD",
        Instruction::Shell(_) => "SHELL",
        Instruction::Stopsignal(_) => "STOPSIGNAL",
        _ => "this instruction",
    }
}

fn command_form(command: &Command<'_>, line: usize, instruction: &str) -> Result<CommandForm> {
    Ok(match command {
        Command::Exec(argv) => {
            CommandForm::Exec(argv.value.iter().map(|a| a.value.to_string()).collect())
        }
        Command::Shell(text) => CommandForm::Shell(text.value.to_string()),
        _ => {
            return Err(ContainerfileError::Instruction {
                line,
                instruction: instruction.into(),
                reason: "this form of the command is not supported".into(),
            });
        }
    })
}

/// A RUN's command: an empty one (`RUN`, `RUN []`, `RUN ["", ...]`) is refused by line.
fn run_command(command: &Command<'_>, line: usize) -> Result<CommandForm> {
    let form = command_form(command, line, "RUN")?;
    let empty = match &form {
        CommandForm::Exec(argv) => argv.first().is_none_or(|a| a.is_empty()),
        CommandForm::Shell(text) => text.trim().is_empty(),
    };
    if empty {
        return Err(ContainerfileError::Instruction {
            line,
            instruction: "RUN".into(),
            reason: "the command is empty; give RUN a shell line or an exec-form array".into(),
        });
    }
    Ok(form)
}

fn bad_flag(line: usize, instruction: &str, flag: &Flag<'_>) -> ContainerfileError {
    ContainerfileError::Instruction {
        line,
        instruction: instruction.into(),
        reason: format!("the flag --{} is not supported", flag.name.value),
    }
}

fn copy_step(
    add: bool,
    options: &[Flag<'_>],
    sources: &[Source<'_>],
    dest: String,
    line: usize,
) -> Result<CopyStep> {
    let instruction = if add { "ADD" } else { "COPY" };
    let mut step = CopyStep {
        add,
        from: None,
        chown: None,
        chmod: None,
        sources: Vec::new(),
        dest,
    };
    for flag in options {
        let value = flag.value.as_ref().map(|v| v.value.to_string());
        let slot = match &*flag.name.value {
            "from" if !add => &mut step.from,
            "chown" => &mut step.chown,
            "chmod" => &mut step.chmod,
            _ => return Err(bad_flag(line, instruction, flag)),
        };
        *slot = Some(value.ok_or_else(|| ContainerfileError::Instruction {
            line,
            instruction: instruction.into(),
            reason: format!(
                "--{} needs a value (--{}=VALUE)",
                flag.name.value, flag.name.value
            ),
        })?);
    }
    for source in sources {
        match source {
            Source::Path(path) => step.sources.push(path.value.to_string()),
            _ => {
                return Err(ContainerfileError::Instruction {
                    line,
                    instruction: instruction.into(),
                    reason: "here-document sources are not supported yet".into(),
                });
            }
        }
    }
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_steps_and_lines() {
        let file = parse(
            "Containerfile",
            "ARG V=1\nFROM scratch AS one\nCOPY --chmod=644 a b /d/\n\nFROM base:${V}\nCOPY --from=one /d /e\nCMD [\"/bin/sh\"]\n",
        )
        .unwrap();
        assert_eq!(file.global_args, [(1, "V=1".to_string())]);
        assert_eq!(file.stages.len(), 2);
        assert_eq!(file.stages[0].name.as_deref(), Some("one"));
        let StepKind::Copy(copy) = &file.stages[0].steps[0].kind else {
            panic!("a COPY step")
        };
        assert_eq!(copy.sources, ["a", "b"]);
        assert_eq!(copy.chmod.as_deref(), Some("644"));
        assert_eq!(file.stages[1].steps[0].line, 6);
        assert_eq!(file.stages[1].base, "base:${V}");
    }

    #[test]
    fn run_forms_and_unknown_instructions_with_their_line() {
        let file = parse(
            "Containerfile",
            "FROM scratch\n\nRUN echo a \\\n  b\nRUN [\"/bin/true\", \"x\"]\n",
        )
        .unwrap();
        let steps = &file.stages[0].steps;
        assert!(
            matches!(&steps[0].kind, StepKind::Run(CommandForm::Shell(s)) if s.starts_with("echo a"))
        );
        assert_eq!(steps[0].line, 3);
        assert!(
            matches!(&steps[1].kind, StepKind::Run(CommandForm::Exec(a)) if a == &["/bin/true", "x"])
        );
        // The parser refuses `RUN` and `RUN []` itself (with a column); berth the rest.
        for bad in [
            "RUN\n",
            "RUN []\n",
            "RUN [\"\"]\n",
            "RUN --mount=type=cache,target=/x true\n",
        ] {
            let err = parse("Containerfile", &format!("FROM scratch\n{bad}")).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("line 2") && text.contains("RUN"),
                "{bad}: {text}"
            );
        }
        let err = parse("Containerfile", "FROM scratch\nSHELL [\"/bin/bash\"]\n").unwrap_err();
        assert_eq!(err.to_string(), "SHELL is not supported yet (line 2)");
        let err = parse("Containerfile", "FROM scratch\nFROB x\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 2") && text.contains("FROB"), "{text}");
    }
}
