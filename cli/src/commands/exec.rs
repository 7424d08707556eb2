//! `berth exec`: run a command in a running container, local or (with --agent) on a node.

use std::io::{Read as _, Write as _};

use anyhow::{Context as _, bail};
use berth_proto::v1::{ExecInput, ExecStart, exec_input, exec_output};

use crate::Context;
use crate::container::layout;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Keep stdin open and pass it to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Extra environment variables (KEY=VALUE).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    #[command(flatten)]
    agent: crate::remote::AgentArg,
    /// Container id or name.
    container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs the command; returns its exit code.
pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    for e in &args.env {
        if !e.contains('=') || e.starts_with('=') {
            bail!("invalid --env {e:?}: expected KEY=VALUE");
        }
    }
    match &args.agent.agent {
        Some(agent) => remote(agent, &args),
        None => local(&args, ctx),
    }
}

fn local(args: &Args, ctx: &Context) -> anyhow::Result<i32> {
    let (paths, _) = layout::find(&ctx.data_dir, &args.container)?;
    let state = berth_runtime::state(&paths.runtime_root, &paths.id)
        .with_context(|| format!("container {} is not running", args.container))?;
    let spec = berth_runtime::spec::load_bundle(&state.oci.bundle)?.spec;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(false));
    if let Some(dir) = &args.workdir {
        process.set_cwd(dir.into());
    }
    let mut env = process.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    process.set_env(Some(env));
    if !args.interactive {
        let devnull = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), 0).context("dup2")?;
    }
    let started = berth_runtime::exec::exec(&berth_runtime::exec::ExecOptions {
        root: paths.runtime_root.clone(),
        id: paths.id.clone(),
        process,
        console_socket: None,
        pid_file: None,
        preserve_fds: 0,
    })?;
    berth_runtime::forward::forward_to(started.pid)?;
    loop {
        match nix::sys::wait::waitpid(started.pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(status) => return Ok(berth_runtime::container::exit_code(status)),
            Err(e) => return Err(e).context("waiting for the command"),
        }
    }
}

fn remote(agent: &str, args: &Args) -> anyhow::Result<i32> {
    let start = ExecInput {
        msg: Some(exec_input::Msg::Start(ExecStart {
            container_id: args.container.clone(),
            command: args.command.clone(),
            env: args
                .env
                .iter()
                .filter_map(|e| e.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: args.workdir.clone().unwrap_or_default(),
        })),
    };
    let interactive = args.interactive;
    crate::remote::block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::channel::<ExecInput>(16);
        tx.send(start).await?;
        if interactive {
            // stdin is read on a thread of its own: a blocking read has no place on the runtime.
            std::thread::spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    let msg = match stdin.read(&mut buf) {
                        Ok(0) | Err(_) => exec_input::Msg::CloseStdin(true),
                        Ok(n) => exec_input::Msg::Stdin(buf[..n].to_vec()),
                    };
                    let last = matches!(msg, exec_input::Msg::CloseStdin(_));
                    if tx.blocking_send(ExecInput { msg: Some(msg) }).is_err() || last {
                        return;
                    }
                }
            });
        } else {
            tx.send(ExecInput {
                msg: Some(exec_input::Msg::CloseStdin(true)),
            })
            .await?;
        }
        let mut client = crate::remote::connect(agent).await?;
        let mut outputs = client
            .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(crate::remote::status_error)?
            .into_inner();
        while let Some(out) = outputs
            .message()
            .await
            .map_err(crate::remote::status_error)?
        {
            match out.msg {
                Some(exec_output::Msg::Stdout(b)) => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(&b)?;
                    o.flush()?;
                }
                Some(exec_output::Msg::Stderr(b)) => {
                    let mut e = std::io::stderr().lock();
                    e.write_all(&b)?;
                    e.flush()?;
                }
                Some(exec_output::Msg::ExitCode(code)) => return Ok(code),
                None => {}
            }
        }
        bail!("the agent ended the exec without an exit code")
    })
}
