//! How the agent reaches a scheduler: the endpoint for one address, with mutual TLS when the
//! agent has it (the node certificate presented, the scheduler verified under the address's
//! host name).

use std::time::Duration;

use tonic::transport::Endpoint;

use crate::config::Config;

/// A scheduler address that cannot be dialled.
#[derive(Debug, thiserror::Error)]
#[error("invalid scheduler address {0:?}")]
pub(crate) struct BadAddress(String);

/// The endpoint of the scheduler at `addr`. With TLS an `http://` address is dialled as
/// `https://` (a leader hint from a standby may be written either way): a node certificate is
/// never meant to go over plaintext.
pub(crate) fn scheduler_endpoint(config: &Config, addr: &str) -> Result<Endpoint, BadAddress> {
    let endpoint = berth_proto::tls::dial(addr, config.tls.as_ref().map(|t| &t.client))
        .map_err(|e| BadAddress(format!("{addr}: {e}")))?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true))
}
