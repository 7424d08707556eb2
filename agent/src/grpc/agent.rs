//! AgentService: the node's containers, their logs and exec, for the CLI and the scheduler.

use std::pin::Pin;

use berth_proto::v1::agent_service_server::AgentService;
use berth_proto::v1::{
    ExecInput, ExecOutput, ExplainRequest, ExplainResponse, ListContainersRequest,
    ListContainersResponse, LogChunk, LogsRequest, exec_input,
};
use futures::{Stream, StreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::containers::Containers;
use crate::error::AgentError;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

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
        let lines = usize::try_from(req.tail_lines).unwrap_or(usize::MAX);
        let chunks = self
            .containers
            .logs(&req.container_id, lines, req.follow)?
            .map(|chunk| chunk.map(|data| LogChunk { data }).map_err(Into::into));
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let id = request.into_inner().container_id;
        Ok(Response::new(self.containers.explain(id).await?))
    }

    type ExecStream = BoxStream<ExecOutput>;

    async fn exec(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut inbound = request.into_inner();
        let Some(ExecInput {
            msg: Some(exec_input::Msg::Start(start)),
        }) = inbound.message().await?
        else {
            return Err(AgentError::InvalidArgument {
                field: "exec",
                reason: "the first message must be an ExecStart".into(),
            }
            .into());
        };
        let exec = self.containers.exec(&start)?;
        let mut stdin = exec.stdin;
        tokio::spawn(async move {
            while let Ok(Some(input)) = inbound.message().await {
                match input.msg {
                    Some(exec_input::Msg::Stdin(bytes))
                        if stdin.write_all(&bytes).await.is_err() =>
                    {
                        break;
                    }
                    Some(exec_input::Msg::CloseStdin(_)) => break,
                    _ => {}
                }
            }
            // Dropping stdin closes it: the command sees EOF.
        });
        let output = ReceiverStream::new(exec.output).map(|msg| msg.map_err(Into::into));
        Ok(Response::new(Box::pin(output)))
    }
}
