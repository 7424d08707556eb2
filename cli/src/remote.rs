//! Reaching a node's containers through its agent's AgentService (`--agent ADDR`).

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::agent_service_client::AgentServiceClient;

/// The agent address flag shared by ps, logs and exec.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AgentArg {
    /// Reach the containers of the node whose agent listens here (http://HOST:PORT)
    /// instead of this machine's local containers.
    #[arg(long, env = "BERTH_AGENT")]
    pub agent: Option<String>,
}

/// Runs `f` on a single-threaded tokio runtime: each remote command is one short exchange.
pub(crate) fn block_on<T>(
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

pub(crate) async fn connect(
    addr: &str,
) -> anyhow::Result<AgentServiceClient<crate::auth::AuthChannel>> {
    let addr = url(addr);
    let channel = crate::auth::connect(&addr, "the agent").await?;
    Ok(AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// One line for a gRPC error: its message, which names the object; its kind stays with it
/// and decides the exit status (see [`crate::exit`]).
pub(crate) fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::Error::new(crate::exit::RemoteError::from(status))
}

/// The URL of `addr`: HOST:PORT gets `https://` when a CA is given (--tls-ca), `http://`
/// otherwise.
pub(crate) fn url(addr: &str) -> String {
    berth_proto::tls::url(addr, crate::auth::tls_ca_given())
}

/// The node's containers, as its agent lists them.
pub(crate) fn list_containers(
    agent: &str,
) -> anyhow::Result<berth_proto::v1::ListContainersResponse> {
    block_on(async {
        let mut client = connect(agent).await?;
        let reply = client
            .list_containers(berth_proto::v1::ListContainersRequest {})
            .await
            .map_err(status_error)?;
        Ok(reply.into_inner())
    })
}
