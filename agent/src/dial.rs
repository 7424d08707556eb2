//! How the agent reaches a scheduler: the endpoint for one address, with mutual TLS when the
//! agent has it (the node certificate presented, the scheduler verified under the address's
//! host name).

use std::time::Duration;

use tonic::transport::Endpoint;

use crate::config::Config;
use crate::session::SessionError;

/// The endpoint of the scheduler at `addr`. With TLS an `http://` address is dialled as
/// `https://` (a leader hint from a standby may be written either way): a node certificate is
/// never meant to go over plaintext.
pub fn scheduler_endpoint(config: &Config, addr: &str) -> Result<Endpoint, SessionError> {
    let url = match (&config.tls, addr.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => addr.to_string(),
    };
    let mut endpoint = Endpoint::from_shared(url)
        .map_err(|_| SessionError::BadAddress(addr.to_string()))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    if let Some(tls) = &config.tls {
        // IPv6 hosts come bracketed in URIs, not in certificates.
        let host = endpoint
            .uri()
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        endpoint = endpoint
            .tls_config(tls.client.clone().domain_name(host))
            .map_err(|source| SessionError::Connect {
                addr: addr.to_string(),
                source,
            })?;
    }
    Ok(endpoint)
}
