//! Reaching into a container from outside: its log, an explanation of its isolation, and a
//! command run inside it. AgentService's handlers call these and only translate.

use std::pin::Pin;
use std::process::Stdio;

use berth_proto::v1::{ContainerState, ExecOutput, ExecStart, ExplainResponse, exec_output};
use futures::{Stream, StreamExt as _};
use tokio::io::AsyncReadExt as _;
use tokio::process::ChildStdin;
use tokio::sync::mpsc;

use super::Containers;
use crate::error::AgentError;

/// Largest exec command line accepted, in bytes.
const MAX_EXEC_ARGS: usize = 64 << 10;

/// A stream of log bytes, or of exec output.
pub(crate) type Chunks<T> = Pin<Box<dyn Stream<Item = Result<T, AgentError>> + Send>>;

/// A command running in a container: its stdin, and its output ending with the exit code.
#[derive(Debug)]
pub(crate) struct Exec {
    pub stdin: ChildStdin,
    pub output: mpsc::Receiver<Result<ExecOutput, AgentError>>,
}

impl Containers {
    /// The last `tail_lines` of a container's log; with `follow`, then what it writes until its
    /// process ends (or it is removed).
    pub(crate) fn logs(
        &self,
        id: &str,
        tail_lines: usize,
        follow: bool,
    ) -> Result<Chunks<Vec<u8>>, AgentError> {
        let paths = self.paths(id)?;
        let Some(mut status) = self.watch(id) else {
            return Err(AgentError::NoSuchContainer(id.to_string()));
        };
        if !follow {
            let bytes = crate::logs::tail(&paths, tail_lines)
                .map_err(AgentError::io(format!("reading the log of {}", paths.id)))?;
            let chunks: Vec<Result<Vec<u8>, AgentError>> =
                bytes.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
            return Ok(Box::pin(futures::stream::iter(chunks)));
        }
        // Following ends when the container's process has ended (or it is removed).
        let until = async move {
            loop {
                let state = status.borrow_and_update().state;
                let done = [
                    ContainerState::Exited,
                    ContainerState::Failed,
                    ContainerState::Stopping,
                ]
                .iter()
                .any(|s| *s as i32 == state);
                if done || status.changed().await.is_err() {
                    return;
                }
            }
        };
        let stream = crate::logs::follow(paths, tail_lines, until)
            .map(|chunk| chunk.map_err(AgentError::internal("reading the log")));
        Ok(Box::pin(stream))
    }

    /// What isolates a running container, read from /proc.
    pub(crate) async fn explain(&self, id: String) -> Result<ExplainResponse, AgentError> {
        let status = self
            .status(&id)
            .ok_or_else(|| AgentError::NoSuchContainer(id.clone()))?;
        let pid = i32::try_from(status.pid).unwrap_or(0);
        if status.state != ContainerState::Running as i32 || pid <= 0 {
            return Err(AgentError::NotRunning {
                id,
                state: state_name(status.state),
            });
        }
        let node = self.config().node_name.clone();
        let source = format!("node {node}");
        let (container_id, name) = (id.clone(), status.deployment.clone());
        let config = self.paths(&id)?.dir.join("config.json");
        // Reading /proc is blocking file I/O: keep it off the async workers.
        let explanation = tokio::task::spawn_blocking(move || {
            let mut e = berth_runtime::explain::explain(container_id, name, pid, source)?;
            e.seccomp.profile = berth_runtime::explain::seccomp_profile(&config);
            Ok::<_, berth_runtime::explain::ExplainError>(e)
        })
        .await
        .map_err(AgentError::internal("explain task"))??;
        let explanation_json = serde_json::to_string(&explanation)
            .map_err(AgentError::internal("encoding the explanation"))?;
        Ok(ExplainResponse {
            node_name: node,
            container_id: id,
            explanation_json,
        })
    }

    /// Starts `start.command` in a running container through the runtime's `exec`.
    pub(crate) fn exec(&self, start: &ExecStart) -> Result<Exec, AgentError> {
        check_command(&start.command)?;
        let paths = self.paths(&start.container_id)?;
        let status = self
            .status(&start.container_id)
            .ok_or_else(|| AgentError::NoSuchContainer(start.container_id.clone()))?;
        if status.state != ContainerState::Running as i32 {
            return Err(AgentError::NotRunning {
                id: start.container_id.clone(),
                state: state_name(status.state),
            });
        }
        let runtime = &self.config().shim.runtime_binary;
        let mut cmd = tokio::process::Command::new(runtime);
        cmd.arg("--root").arg(&paths.runtime_root).arg("exec");
        if !start.cwd.is_empty() {
            cmd.args(["--cwd", &start.cwd]);
        }
        let mut env: Vec<_> = start.env.iter().collect();
        env.sort();
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg(&start.container_id).arg("--").args(&start.command);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(AgentError::io(format!("running {}", runtime.display())))?;
        let (tx, rx) = mpsc::channel(64);
        let stdin = child.stdin.take().expect("piped stdin");
        let out = pump(
            child.stdout.take().expect("piped"),
            tx.clone(),
            exec_output::Msg::Stdout,
        );
        let err = pump(
            child.stderr.take().expect("piped"),
            tx.clone(),
            exec_output::Msg::Stderr,
        );
        tokio::spawn(async move {
            let _ = tokio::join!(out, err);
            let msg = match child.wait().await {
                Ok(status) => Ok(ExecOutput {
                    msg: Some(exec_output::Msg::ExitCode(status.code().unwrap_or_else(
                        || {
                            128 + std::os::unix::process::ExitStatusExt::signal(&status)
                                .unwrap_or(0)
                        },
                    ))),
                }),
                Err(e) => Err(AgentError::internal("waiting for exec")(e)),
            };
            let _ = tx.send(msg).await;
        });
        Ok(Exec { stdin, output: rx })
    }
}

/// An exec command must name a program and stay within [`MAX_EXEC_ARGS`].
fn check_command(command: &[String]) -> Result<(), AgentError> {
    if command.is_empty() {
        return Err(AgentError::InvalidArgument {
            field: "command",
            reason: "empty".into(),
        });
    }
    if command.iter().map(String::len).sum::<usize>() > MAX_EXEC_ARGS {
        return Err(AgentError::InvalidArgument {
            field: "command",
            reason: format!("longer than {MAX_EXEC_ARGS} bytes"),
        });
    }
    Ok(())
}

fn state_name(state: i32) -> String {
    ContainerState::try_from(state).map_or("unknown".to_string(), |s| s.as_str_name().to_string())
}

/// Copies one output pipe of an exec into its messages, until the pipe or the receiver ends.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    tx: mpsc::Sender<Result<ExecOutput, AgentError>>,
    wrap: fn(Vec<u8>) -> exec_output::Msg,
) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let msg = ExecOutput {
                    msg: Some(wrap(buf[..n].to_vec())),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        }
    }
}
