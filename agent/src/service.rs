//! AgentService: the node's containers, their logs and exec, for the CLI and the scheduler.

use std::pin::Pin;
use std::process::Stdio;

use berth_proto::v1::agent_service_server::AgentService;
use berth_proto::v1::{
    ContainerState, ExecInput, ExecOutput, ExplainRequest, ExplainResponse, ListContainersRequest,
    ListContainersResponse, LogChunk, LogsRequest, exec_input, exec_output,
};
use futures::{Stream, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::containers::Containers;
use crate::error::AgentError;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Largest exec command line accepted, in bytes.
const MAX_EXEC_ARGS: usize = 64 << 10;

#[derive(Debug, Clone)]
pub(crate) struct AgentApi {
    containers: Containers,
}

impl AgentApi {
    pub(crate) fn new(containers: Containers) -> Self {
        Self { containers }
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn list_containers(
        &self,
        _request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let mut containers = self.containers.statuses();
        containers.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        Ok(Response::new(ListContainersResponse {
            node_name: self.containers.config().node_name.clone(),
            containers,
        }))
    }

    type LogsStream = BoxStream<LogChunk>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let paths = self.containers.paths(&req.container_id)?;
        let Some(mut status) = self.containers.watch(&req.container_id) else {
            return Err(AgentError::NoSuchContainer(req.container_id).into());
        };
        let lines = req.tail_lines as usize;
        if !req.follow {
            let bytes = crate::logs::tail(&paths, lines)
                .map_err(AgentError::io(format!("reading the log of {}", paths.id)))?;
            let chunks: Vec<Result<LogChunk, Status>> = bytes
                .chunks(64 << 10)
                .map(|c| Ok(LogChunk { data: c.to_vec() }))
                .collect();
            return Ok(Response::new(Box::pin(futures::stream::iter(chunks))));
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
        let stream = crate::logs::follow(paths, lines, until).map(|chunk| {
            chunk
                .map(|data| LogChunk { data })
                .map_err(|e| Status::internal(format!("reading the log: {e}")))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let id = request.into_inner().container_id;
        let status = self
            .containers
            .status(&id)
            .ok_or_else(|| AgentError::NoSuchContainer(id.clone()))?;
        let pid = i32::try_from(status.pid).unwrap_or(0);
        if status.state != ContainerState::Running as i32 || pid <= 0 {
            let state = ContainerState::try_from(status.state)
                .map_or("unknown".to_string(), |s| s.as_str_name().to_string());
            return Err(AgentError::NotRunning { id, state }.into());
        }
        let node = self.containers.config().node_name.clone();
        let source = format!("node {node}");
        let (container_id, name) = (id.clone(), status.deployment.clone());
        let config = self.containers.paths(&id)?.dir.join("config.json");
        // Reading /proc is blocking file I/O: keep it off the async workers.
        let explanation = tokio::task::spawn_blocking(move || {
            let mut e = berth_runtime::explain::explain(container_id, name, pid, source)?;
            e.seccomp.profile = berth_runtime::explain::seccomp_profile(&config);
            Ok::<_, berth_runtime::explain::ExplainError>(e)
        })
        .await
        .map_err(|e| Status::internal(format!("explain task: {e}")))?
        .map_err(AgentError::from)?;
        let explanation_json = serde_json::to_string(&explanation)
            .map_err(|e| Status::internal(format!("encoding the explanation: {e}")))?;
        Ok(Response::new(ExplainResponse {
            node_name: node,
            container_id: id,
            explanation_json,
        }))
    }

    type ExecStream = BoxStream<ExecOutput>;

    async fn exec(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut inbound = request.into_inner();
        let start = match inbound.message().await? {
            Some(ExecInput {
                msg: Some(exec_input::Msg::Start(start)),
            }) => start,
            _ => {
                return Err(AgentError::InvalidArgument {
                    field: "exec",
                    reason: "the first message must be an ExecStart".into(),
                }
                .into());
            }
        };
        if start.command.is_empty() {
            return Err(AgentError::InvalidArgument {
                field: "command",
                reason: "empty".into(),
            }
            .into());
        }
        if start.command.iter().map(String::len).sum::<usize>() > MAX_EXEC_ARGS {
            return Err(AgentError::InvalidArgument {
                field: "command",
                reason: format!("longer than {MAX_EXEC_ARGS} bytes"),
            }
            .into());
        }
        let paths = self.containers.paths(&start.container_id)?;
        let status = self
            .containers
            .status(&start.container_id)
            .ok_or_else(|| AgentError::NoSuchContainer(start.container_id.clone()))?;
        if status.state != ContainerState::Running as i32 {
            let state = ContainerState::try_from(status.state)
                .map_or("unknown".to_string(), |s| s.as_str_name().to_string());
            return Err(AgentError::NotRunning {
                id: start.container_id,
                state,
            }
            .into());
        }
        let config = self.containers.config();
        let mut cmd = tokio::process::Command::new(&config.shim.runtime_binary);
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
        let mut child = cmd.spawn().map_err(AgentError::io(format!(
            "running {}",
            config.shim.runtime_binary.display()
        )))?;
        let (tx, rx) = mpsc::channel::<Result<ExecOutput, Status>>(64);
        let mut stdin = child.stdin.take().expect("piped stdin");
        tokio::spawn(async move {
            while let Ok(Some(input)) = inbound.message().await {
                match input.msg {
                    Some(exec_input::Msg::Stdin(bytes))
                        if stdin.write_all(&bytes).await.is_err() =>
                    {
                        break;
                    }
                    Some(exec_input::Msg::Stdin(_)) => {}
                    Some(exec_input::Msg::CloseStdin(_)) => break,
                    _ => {}
                }
            }
            // Dropping stdin closes it: the command sees EOF.
        });
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
            let code = match child.wait().await {
                Ok(status) => status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
                }),
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("waiting for exec: {e}"))))
                        .await;
                    return;
                }
            };
            let _ = tx
                .send(Ok(ExecOutput {
                    msg: Some(exec_output::Msg::ExitCode(code)),
                }))
                .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    tx: mpsc::Sender<Result<ExecOutput, Status>>,
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
