//! The agent's mutual TLS: the `--tls-*` and `--insecure` flags, checked at start (a node
//! certificate whose CN is `--node-name`), and who may call AgentService: with TLS only a
//! scheduler or an admin, since Exec is a root shell on the node.

use std::path::PathBuf;

use berth_proto::tls::{self, ClientAuth, Role, TlsError, TlsFlags};
use tonic::service::Interceptor;
use tonic::transport::{ClientTlsConfig, Server, ServerTlsConfig};
use tonic::{Request, Status};

use crate::error::AgentError;

/// Why the agent's TLS set-up cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "{}: the certificate is node {cert_name:?}'s, but this agent is --node-name {node:?} \
         (a node acts only under its own certificate)",
        path.display()
    )]
    OtherNode {
        path: PathBuf,
        cert_name: String,
        node: String,
    },
    #[error("the scheduler address {0} is https: pass --tls-cert, --tls-key and --tls-ca")]
    HttpsWithoutTls(String),
    #[error("--scheduler names no address (expected HOST:PORT, or several comma-separated)")]
    NoScheduler,
}

/// The agent's TLS configs, read once at start.
#[derive(Debug, Clone)]
pub struct AgentTls {
    /// To dial the scheduler: presents the node certificate; the server name is set per
    /// address.
    pub client: ClientTlsConfig,
    /// To serve AgentService: client certificates required.
    pub server: ServerTlsConfig,
}

/// The agent's TLS configs from its flags, after checking the files and that the certificate
/// is `node_name`'s node certificate; `None` without TLS flags.
pub fn load(flags: &TlsFlags, node_name: &str) -> Result<Option<AgentTls>, TlsSetupError> {
    let Some((files, identity)) = flags.files(Role::Node)? else {
        return Ok(None);
    };
    if identity.common_name != node_name {
        return Err(TlsSetupError::OtherNode {
            path: files.cert.clone(),
            cert_name: identity.common_name,
            node: node_name.to_string(),
        });
    }
    Ok(Some(AgentTls {
        client: tls::client_config(&files, node_name)?,
        server: tls::server_config(&files, ClientAuth::Required)?,
    }))
}

/// Checks `--scheduler` at start: each comma-separated address must be `HOST:PORT` or
/// `http[s]://HOST:PORT` (a malformed one would otherwise be retried for ever), and `https://`
/// ones need TLS flags, without which they could only fail later.
pub fn check_scheduler(scheduler: &str, tls: bool) -> Result<(), TlsSetupError> {
    let addrs: Vec<&str> = scheduler
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if addrs.is_empty() {
        return Err(TlsSetupError::NoScheduler);
    }
    for addr in addrs {
        tls::check_address(addr, tls)?;
        if addr.starts_with("https://") && !tls {
            return Err(TlsSetupError::HttpsWithoutTls(addr.to_string()));
        }
    }
    Ok(())
}

/// A server builder, with TLS when the agent has it.
pub fn server(tls: Option<&AgentTls>) -> Result<Server, tonic::transport::Error> {
    let server = Server::builder();
    match tls {
        Some(tls) => server.tls_config(tls.server.clone()),
        None => Ok(server),
    }
}

/// Admits AgentService calls from schedulers and admins only, when TLS is on (the handshake
/// already demanded a certificate from the CA; this checks its role). Without TLS the agent
/// trusts its loopback callers, as before.
#[derive(Debug, Clone, Copy)]
pub struct SchedulersOnly {
    pub enabled: bool,
}

impl Interceptor for SchedulersOnly {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if !self.enabled {
            return Ok(req);
        }
        let refuse = |error: AgentError, who: &str| {
            let status: Status = error.into();
            tracing::warn!(
                caller = %who,
                peer = ?req.remote_addr(),
                code = ?status.code(),
                reason = %status.message(),
                "AgentService call refused"
            );
            Err(status)
        };
        match tls::peer_identity(&req) {
            None => refuse(
                AgentError::Unauthenticated("a client certificate is required".into()),
                "anonymous",
            ),
            Some(Err(e)) => refuse(AgentError::Unauthenticated(e.to_string()), "unknown"),
            Some(Ok(id)) if matches!(id.role, Role::Scheduler | Role::Admin) => Ok(req),
            Some(Ok(id)) => {
                let who = format!("{} {:?}", id.role, id.common_name);
                refuse(
                    AgentError::PermissionDenied(format!(
                        "{who} may not call AgentService: it needs the scheduler or admin role"
                    )),
                    &who,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses_are_checked_at_start() {
        for ok in [
            "127.0.0.1:7700",
            "http://127.0.0.1:7700",
            "10.0.0.1:7700, 10.0.0.2:7700",
        ] {
            assert!(check_scheduler(ok, false).is_ok(), "{ok}");
        }
        assert!(check_scheduler("https://10.0.0.1:7700,10.0.0.2:7700", true).is_ok());
        let err = check_scheduler("10.0.0.1:7700,https://10.0.0.2:7700", false).unwrap_err();
        assert!(matches!(err, TlsSetupError::HttpsWithoutTls(_)), "{err}");
        assert!(matches!(
            check_scheduler(" , ", false),
            Err(TlsSetupError::NoScheduler)
        ));
        let err = check_scheduler("10.0.0.1:7700,10.0.0.2", false).unwrap_err();
        assert!(err.to_string().contains("\"10.0.0.2\""), "{err}");
    }
}
