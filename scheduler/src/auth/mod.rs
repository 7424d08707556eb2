//! Who may call what on the scheduler: TLS set-up from the `--tls-*` flags, the per-method
//! access rules, bearer tokens, and the tower layer that enforces them before any handler runs.
//!
//! With TLS on, every request except health checks and reflection needs an identity: a
//! verified client certificate (its `O=berth:<role>`), a bearer token (`authorization: Bearer
//! berth_<id>_<secret>`, looked up in the store), or, from a peer holding a scheduler
//! certificate only, the identity that scheduler forwards in [`FORWARDED_IDENTITY`]. Without
//! TLS the scheduler trusts its loopback callers as before, and the layer lets everything by.

pub mod layer;
pub mod tokens;

use std::fmt;
use std::sync::Arc;

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::tls::{self, ClientAuth, Role, TlsFiles};
use berth_proto::v1::agent_service_client::AgentServiceClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Server, ServerTlsConfig};
use tower_layer::{Identity as NoLayer, Stack};

use crate::error::SchedError;
use crate::store::Store;

pub use layer::AuthLayer;
pub use tokens::Tokens;

/// The header a standby scheduler sets to say on whose behalf it forwards a call:
/// `<name>;<role>`. Trusted only from a peer with a scheduler certificate; stripped otherwise.
pub const FORWARDED_IDENTITY: &str = "berth-forwarded-identity";

/// The authenticated caller of a request, put into its extensions for handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The certificate's CN, or the token's name.
    pub name: String,
    pub role: Role,
    pub via: Via,
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A client certificate the TLS handshake verified.
    Certificate,
    /// A bearer token with this id.
    Token { id: String },
    /// Forwarded by the scheduler whose certificate has this CN.
    Forwarded { by: String },
}

impl Caller {
    /// The certificate's common name, when the caller presented a certificate itself (not a
    /// token, not forwarded): what NodeService matches node names against.
    pub fn certificate_name(&self) -> Option<&str> {
        (self.via == Via::Certificate).then_some(self.name.as_str())
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.via {
            Via::Certificate => write!(f, "{} {:?} (certificate)", self.role, self.name),
            Via::Token { id } => write!(f, "{} {:?} (token {id})", self.role, self.name),
            Via::Forwarded { by } => {
                write!(f, "{} {:?} (forwarded by {by:?})", self.role, self.name)
            }
        }
    }
}

/// What a method requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health checks and reflection: no identity needed.
    Open,
    /// NodeService: agents only.
    Node,
    /// Reading deployments, nodes, containers, logs, volumes and configs.
    Read,
    /// Changing deployments and configs.
    Write,
    /// Managing tokens and secrets.
    Admin,
}

impl Access {
    /// The rule for a gRPC request path (`/package.Service/Method`); `None` for paths no rule
    /// covers, which are refused: a method added later stays closed until someone decides.
    pub fn of_path(path: &str) -> Option<Access> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        match service {
            "grpc.health.v1.Health"
            | "grpc.reflection.v1.ServerReflection"
            | "grpc.reflection.v1alpha.ServerReflection" => Some(Access::Open),
            "berth.v1.NodeService" => Some(Access::Node),
            "berth.v1.AuthService" => Some(Access::Admin),
            "berth.v1.DeploymentService" => match method {
                "Get" | "List" | "History" | "Watch" | "ListNodes" | "ListServices"
                | "ListContainers" | "Logs" | "Explain" | "ListVolumes" => Some(Access::Read),
                "Apply" | "Delete" | "Scale" | "Approve" | "Reject" | "Rollback" => {
                    Some(Access::Write)
                }
                _ => None,
            },
            "berth.v1.ConfigService" => match method {
                "GetConfig" | "ListConfigs" => Some(Access::Read),
                "CreateConfig" | "UpdateConfig" | "DeleteConfig" => Some(Access::Write),
                _ => None,
            },
            "berth.v1.EnvironmentService" => match method {
                "ListEnvironments" => Some(Access::Read),
                "CreateEnvironment" | "DeleteEnvironment" => Some(Access::Admin),
                _ => None,
            },
            "berth.v1.ReleaseService" => match method {
                "ListReleases" | "ListAudit" => Some(Access::Read),
                "Promote" => Some(Access::Write),
                _ => None,
            },
            "berth.v1.EventService" => match method {
                "Events" => Some(Access::Read),
                _ => None,
            },
            // Deployers may use secrets in specs; only admins create, read or rotate them.
            "berth.v1.SecretService" => match method {
                "CreateSecret" | "UpdateSecret" | "GetSecret" | "ListSecrets" | "DeleteSecret"
                | "RotateSecretsKey" => Some(Access::Admin),
                _ => None,
            },
            _ => None,
        }
    }

    /// The roles allowed.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Access::Open => &Role::ALL,
            Access::Node => &[Role::Node],
            // A scheduler reads on behalf of nobody but itself (e.g. a standby's own view).
            Access::Read => &[Role::Viewer, Role::Deployer, Role::Admin, Role::Scheduler],
            Access::Write => &[Role::Deployer, Role::Admin],
            Access::Admin => &[Role::Admin],
        }
    }

    pub fn allows(self, role: Role) -> bool {
        self.roles().contains(&role)
    }
}

/// The scheduler's TLS material, loaded once at start; `None` inside means TLS (and with it
/// authentication) is off.
#[derive(Debug, Clone, Default)]
pub struct Security {
    tls: Option<Loaded>,
}

#[derive(Debug, Clone)]
struct Loaded {
    server: ServerTlsConfig,
    /// Presents this scheduler's certificate; the server name is set per address dialled.
    client: ClientTlsConfig,
    /// The dashboard's HTTPS: the same certificate, client certificates from the same CA
    /// asked for but optional (a visitor may sign in with a token instead).
    https: Arc<tokio_rustls::rustls::ServerConfig>,
}

impl Security {
    /// Reads and checks the files now, so a bad one fails the start, naming it.
    pub fn load(files: Option<&TlsFiles>) -> Result<Security, SchedError> {
        let Some(files) = files else {
            return Ok(Security::default());
        };
        let server = tls::server_config(files, ClientAuth::Optional)
            .map_err(|e| SchedError::FailedPrecondition(format!("TLS: {e}")))?;
        // Read now, so dialling agents and the leader cannot fail later for a reason known now.
        let client = tls::client_config(files, "localhost")
            .map_err(|e| SchedError::FailedPrecondition(format!("TLS: {e}")))?;
        let https = tls::rustls_server_config(files, ClientAuth::Optional)
            .map_err(|e| SchedError::FailedPrecondition(format!("TLS: {e}")))?;
        Ok(Security {
            tls: Some(Loaded {
                server,
                client,
                https,
            }),
        })
    }

    pub fn enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// The dashboard's HTTPS config, when TLS is on.
    pub(crate) fn https(&self) -> Option<Arc<tokio_rustls::rustls::ServerConfig>> {
        self.tls.as_ref().map(|t| t.https.clone())
    }

    /// A server builder with TLS (when on) and the auth layer (a pass-through when off).
    pub fn server(
        &self,
        store: Arc<dyn Store>,
    ) -> Result<Server<Stack<AuthLayer, NoLayer>>, SchedError> {
        let mut server = Server::builder();
        let layer = match &self.tls {
            Some(loaded) => {
                server = server
                    .tls_config(loaded.server.clone())
                    .map_err(|e| SchedError::FailedPrecondition(format!("TLS: {e}")))?;
                AuthLayer::new(Tokens::new(store))
            }
            None => AuthLayer::disabled(),
        };
        Ok(server.layer(layer))
    }

    /// How to dial another scheduler (a standby forwarding to the leader): over TLS with this
    /// scheduler's certificate, when on.
    pub fn scheduler_endpoint(&self, url: &str) -> Result<Endpoint, SchedError> {
        tls::dial(url, self.client())
            .map_err(|e| SchedError::FailedPrecondition(format!("the leader's address: {e}")))
    }

    fn client(&self) -> Option<&ClientTlsConfig> {
        self.tls.as_ref().map(|t| &t.client)
    }

    /// A client of the agent at `endpoint` (as it registered it). With TLS the scheduler
    /// presents its own certificate (agents admit schedulers and admins only) and verifies the
    /// agent's against the CA; an `http://` endpoint is dialled over TLS all the same, since
    /// plaintext to an agent is never what a TLS cluster wants.
    pub async fn connect_agent(
        &self,
        endpoint: &str,
    ) -> Result<AgentServiceClient<Channel>, SchedError> {
        let unreachable = |reason: String| SchedError::Node {
            node: endpoint.to_string(),
            reason,
        };
        let channel = tls::dial(endpoint, self.client())
            .map_err(|e| unreachable(format!("invalid agent endpoint: {e}")))?;
        let channel = channel
            .connect()
            .await
            .map_err(|e| unreachable(format!("agent unreachable: {}", source_chain(&e))))?;
        Ok(AgentServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// An error with its causes: tonic's transport errors say only "transport error" on top.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_deployment_method_has_a_rule() {
        for method in [
            "Get",
            "List",
            "History",
            "Watch",
            "ListNodes",
            "ListServices",
            "ListContainers",
            "Logs",
            "Explain",
            "ListVolumes",
        ] {
            let path = format!("/berth.v1.DeploymentService/{method}");
            assert_eq!(Access::of_path(&path), Some(Access::Read), "{path}");
        }
        for method in ["Apply", "Delete", "Scale", "Approve", "Reject", "Rollback"] {
            let path = format!("/berth.v1.DeploymentService/{method}");
            assert_eq!(Access::of_path(&path), Some(Access::Write), "{path}");
        }
        assert_eq!(Access::of_path("/berth.v1.DeploymentService/Unheard"), None);
        assert_eq!(Access::of_path("/other.Service/Get"), None);
        assert_eq!(Access::of_path("nonsense"), None);
        assert_eq!(
            Access::of_path("/grpc.health.v1.Health/Check"),
            Some(Access::Open)
        );
        assert_eq!(
            Access::of_path("/berth.v1.AuthService/CreateToken"),
            Some(Access::Admin)
        );
    }

    /// Issue 16: environments are listed by viewers and made by admins; promotion is a
    /// deployer's write.
    #[test]
    fn environment_and_release_methods_have_their_rules() {
        for (path, access) in [
            (
                "/berth.v1.EnvironmentService/ListEnvironments",
                Access::Read,
            ),
            (
                "/berth.v1.EnvironmentService/CreateEnvironment",
                Access::Admin,
            ),
            (
                "/berth.v1.EnvironmentService/DeleteEnvironment",
                Access::Admin,
            ),
            ("/berth.v1.ReleaseService/ListReleases", Access::Read),
            ("/berth.v1.ReleaseService/ListAudit", Access::Read),
            ("/berth.v1.ReleaseService/Promote", Access::Write),
            ("/berth.v1.EventService/Events", Access::Read),
        ] {
            assert_eq!(Access::of_path(path), Some(access), "{path}");
        }
        assert_eq!(Access::of_path("/berth.v1.ReleaseService/Other"), None);
    }

    /// Issue 15: configs are read like deployments and written by deployers; every secret
    /// call is an admin's, so a viewer or deployer can neither read nor create one.
    #[test]
    fn config_and_secret_methods_have_their_rules() {
        for method in ["GetConfig", "ListConfigs"] {
            let path = format!("/berth.v1.ConfigService/{method}");
            assert_eq!(Access::of_path(&path), Some(Access::Read), "{path}");
        }
        for method in ["CreateConfig", "UpdateConfig", "DeleteConfig"] {
            let path = format!("/berth.v1.ConfigService/{method}");
            assert_eq!(Access::of_path(&path), Some(Access::Write), "{path}");
        }
        for method in [
            "CreateSecret",
            "UpdateSecret",
            "GetSecret",
            "ListSecrets",
            "DeleteSecret",
            "RotateSecretsKey",
        ] {
            let path = format!("/berth.v1.SecretService/{method}");
            let access = Access::of_path(&path);
            assert_eq!(access, Some(Access::Admin), "{path}");
            let access = access.unwrap();
            assert!(!access.allows(Role::Viewer) && !access.allows(Role::Deployer));
        }
        assert_eq!(Access::of_path("/berth.v1.ConfigService/Unheard"), None);
        assert_eq!(Access::of_path("/berth.v1.SecretService/GetConfig"), None);
    }

    #[test]
    fn roles_per_access() {
        assert!(Access::Read.allows(Role::Viewer));
        assert!(!Access::Write.allows(Role::Viewer));
        assert!(!Access::Write.allows(Role::Scheduler));
        assert!(!Access::Write.allows(Role::Node));
        assert!(Access::Write.allows(Role::Deployer));
        assert!(!Access::Admin.allows(Role::Deployer));
        assert!(!Access::Node.allows(Role::Admin));
        assert!(!Access::Read.allows(Role::Node));
    }
}
