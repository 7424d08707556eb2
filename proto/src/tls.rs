//! Mutual TLS between berth's daemons and its clients: tonic TLS configs from the PEM files `berth certs` writes, and the berth identity (common name and role) of a verified peer.
//!
//! # Files
//!
//! `berth certs` writes one directory (`<data-dir>/pki` unless `--dir`/`BERTH_PKI_DIR` says
//! otherwise) laid out as:
//!
//! | file                                            | what                                   |
//! |-------------------------------------------------|----------------------------------------|
//! | `ca.pem`, `ca-key.pem`                          | the cluster CA (key only for signing)  |
//! | `node-NAME.pem`, `node-NAME-key.pem`            | an agent: CN=NAME, O=berth:node        |
//! | `scheduler-NAME.pem`, `scheduler-NAME-key.pem`  | a scheduler: CN=NAME, O=berth:scheduler|
//! | `client-NAME.pem`, `client-NAME-key.pem`        | a person or pipeline: O=berth:ROLE     |
//!
//! [`TlsFiles::in_dir`]`(dir, "node-NAME")` (or [`TlsFiles::for_role`]) names the three files
//! a process needs: the CA to verify its peers, its certificate and its key.
//!
//! # Roles
//!
//! A certificate's role is its subject's Organization (O) field, written `berth:<role>`; the
//! role is only meaningful once the CA has verified the chain, which rustls does during the
//! handshake before any request reaches a service. [`peer_identity`] reads it in a handler or an
//! interceptor; [`peer_identity_from_extensions`] reads it in a tower layer, from the
//! [`TlsConnectInfo`] tonic's server puts in every `http::Request`'s extensions (that layer runs
//! outside any user layer, so `Server::builder().layer(..)` sees it too).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, ServerTlsConfig};
use x509_parser::pem::Pem;

/// The CA certificate's file name in a PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name in a PKI directory; only `berth certs` reads it.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// What went wrong reading TLS material or a peer's identity; each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{} does not exist (create it with `berth certs`)", path.display())]
    Missing { path: PathBuf },
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: not usable PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{cert}: not a valid X.509 certificate: {reason}")]
    BadCert { cert: CertSource, reason: String },
    #[error("{cert}: the certificate's subject has no common name (CN)")]
    NoCommonName { cert: CertSource },
    #[error(
        "{cert}: the certificate of {common_name:?} has no berth role \
         (its subject needs O=berth:<node|scheduler|admin|deployer|viewer>)"
    )]
    NoRole {
        cert: CertSource,
        common_name: String,
    },
    #[error(
        "{cert}: the certificate of {common_name:?} has unknown role {role:?} \
         (expected node, scheduler, admin, deployer or viewer)"
    )]
    UnknownRole {
        cert: CertSource,
        common_name: String,
        role: String,
    },
    #[error(
        "refusing to listen on {addr} without TLS: pass the --tls-* flags (see `berth certs`), \
         listen on a loopback address, or pass --insecure to accept plaintext"
    )]
    InsecureListen { addr: SocketAddr },
    #[error("invalid address {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{missing} {verb} missing: --tls-cert, --tls-key and --tls-ca go together")]
    Incomplete { missing: String, verb: &'static str },
    #[error(
        "{}: the certificate of {name:?} is for a {found}, not a {wanted} (issue one with `berth certs {wanted} NAME`)",
        path.display()
    )]
    WrongRole {
        path: PathBuf,
        name: String,
        found: Role,
        wanted: Role,
    },
}

/// Where a certificate came from, for error messages: a file, or the TLS peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    File(PathBuf),
    Peer,
}

impl fmt::Display for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertSource::File(path) => write!(f, "{}", path.display()),
            CertSource::Peer => f.write_str("peer certificate"),
        }
    }
}

/// What a certificate entitles its holder to, from its subject's `O=berth:<role>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// An agent: serves logs/exec, and is a client of the scheduler.
    Node,
    /// A scheduler: serves the cluster API, and is a client of the agents.
    Scheduler,
    /// A person or pipeline allowed everything.
    Admin,
    /// A person or pipeline allowed to deploy, scale and roll back.
    Deployer,
    /// A person or pipeline allowed to read only.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Node,
        Role::Scheduler,
        Role::Admin,
        Role::Deployer,
        Role::Viewer,
    ];

    /// The role's name, as written after `berth:` in the certificate.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Scheduler => "scheduler",
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Viewer => "viewer",
        }
    }

    /// The subject Organization value that carries this role: `berth:<role>`.
    pub fn organization(self) -> String {
        format!("{ORG_PREFIX}{}", self.as_str())
    }

    /// The prefix of this role's file names in a PKI directory: `node`, `scheduler`, or
    /// `client` for the three roles people and pipelines hold.
    pub fn file_prefix(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Scheduler => "scheduler",
            Role::Admin | Role::Deployer | Role::Viewer => "client",
        }
    }

    /// The role from the value of an Organization field, if it is a berth role at all:
    /// `None` for a value without the `berth:` prefix, `Some(Err(name))` for an unknown role.
    pub fn from_organization(value: &str) -> Option<Result<Role, String>> {
        let name = value.strip_prefix(ORG_PREFIX)?;
        Some(name.parse().map_err(|_| name.to_string()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a role name that is none of berth's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected node, scheduler, admin, deployer or viewer)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// Exact, lower-case names only: a certificate is not the place for leniency.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

const ORG_PREFIX: &str = "berth:";

/// Who a verified certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub common_name: String,
    pub role: Role,
}

impl Identity {
    /// The identity in a DER certificate. Does not verify the chain: call it on certificates the
    /// TLS handshake has verified, or on one's own.
    pub fn from_der(der: &[u8], source: CertSource) -> Result<Identity, TlsError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::BadCert {
                cert: source.clone(),
                reason: e.to_string(),
            })?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty())
            .ok_or_else(|| TlsError::NoCommonName {
                cert: source.clone(),
            })?
            .to_string();
        // Only `berth:` values count; other O values (a company name) are allowed alongside.
        // Two berth roles in one subject would be ambiguous, so the first one decides and
        // `berth certs` never writes more than one.
        let role = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .find_map(Role::from_organization);
        match role {
            None => Err(TlsError::NoRole {
                cert: source,
                common_name,
            }),
            Some(Err(role)) => Err(TlsError::UnknownRole {
                cert: source,
                common_name,
                role,
            }),
            Some(Ok(role)) => Ok(Identity { common_name, role }),
        }
    }

    /// The identity in the first certificate of a PEM file, e.g. so a daemon can check at start
    /// that it was given a certificate of the right role.
    pub fn from_pem_file(path: &Path) -> Result<Identity, TlsError> {
        let der = read_cert_pem(path)?;
        Identity::from_der(&der, CertSource::File(path.to_path_buf()))
    }
}

/// The identity of the client of a tonic request, from the leaf certificate the TLS handshake
/// verified: `None` without a client certificate (plaintext, or token-only under
/// [`ClientAuth::Optional`]), `Some(Err)` when the certificate chains to the CA but carries no
/// berth identity.
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<Result<Identity, TlsError>> {
    let certs = req.peer_certs()?;
    identity_of_chain(&certs)
}

/// [`peer_identity`] for tower layers, which see `http::Request`s: pass `req.extensions()`.
/// Works under tonic's `Server::builder().layer(..)` because the server inserts the
/// connection's [`TlsConnectInfo`] before any user layer runs.
pub fn peer_identity_from_extensions(
    extensions: &http::Extensions,
) -> Option<Result<Identity, TlsError>> {
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    identity_of_chain(&certs)
}

fn identity_of_chain(
    certs: &[tonic::transport::CertificateDer<'static>],
) -> Option<Result<Identity, TlsError>> {
    // rustls gives the chain leaf first.
    let leaf = certs.first()?;
    Some(Identity::from_der(leaf.as_ref(), CertSource::Peer))
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a certificate from the CA; others fail the handshake.
    Required,
    /// Clients may present a certificate from the CA (which is then verified: a bad one still
    /// fails the handshake) or none, e.g. to authenticate with a token instead.
    Optional,
}

/// The three files a process needs for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA, which peers' certificates must chain to.
    pub ca: PathBuf,
    /// This process's certificate.
    pub cert: PathBuf,
    /// This process's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// `DIR/ca.pem`, `DIR/NAME.pem` and `DIR/NAME-key.pem`, where NAME is the stem `berth certs`
    /// used: `node-<node>`, `scheduler-<name>` or `client-<name>`.
    pub fn in_dir(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        }
    }

    /// The files `berth certs node|scheduler|client NAME` writes for a holder of `role`.
    pub fn for_role(dir: &Path, role: Role, name: &str) -> TlsFiles {
        TlsFiles::in_dir(dir, &format!("{}-{name}", role.file_prefix()))
    }
}

/// A server config presenting `files.cert`, verifying client certificates against `files.ca`.
/// Reads and checks all three files now, so a daemon fails at start naming the bad file rather
/// than at its first handshake.
pub fn server_config(files: &TlsFiles, auth: ClientAuth) -> Result<ServerTlsConfig, TlsError> {
    let ca = read_ca(&files.ca)?;
    let identity = read_identity(files)?;
    Ok(ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(ca)
        .client_auth_optional(auth == ClientAuth::Optional))
}

/// [`server_config`] as a rustls config, for a server tonic does not run (the dashboard's
/// HTTPS): the same certificate, key and CA, client certificates verified against the CA
/// (`auth`), HTTP/1.1 offered over ALPN.
pub fn rustls_server_config(
    files: &TlsFiles,
    auth: ClientAuth,
) -> Result<std::sync::Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    let bad = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls::Error| TlsError::Pem {
            path,
            reason: e.to_string(),
        }
    };
    let certs_in = |path: &Path| -> Result<Vec<CertificateDer<'static>>, TlsError> {
        read_cert_pem(path)?;
        Ok(pem_blocks(path, &read_file(path)?)?
            .into_iter()
            .filter(|b| b.label == "CERTIFICATE")
            .map(|b| CertificateDer::from(b.contents))
            .collect())
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs_in(&files.ca)? {
        roots.add(ca).map_err(bad(&files.ca))?;
    }
    let key = pem_blocks(&files.key, &read_file(&files.key)?)?
        .into_iter()
        .find_map(|b| match b.label.as_str() {
            "PRIVATE KEY" => Some(PrivateKeyDer::Pkcs8(b.contents.into())),
            "EC PRIVATE KEY" => Some(PrivateKeyDer::Sec1(b.contents.into())),
            "RSA PRIVATE KEY" => Some(PrivateKeyDer::Pkcs1(b.contents.into())),
            _ => None,
        })
        .ok_or_else(|| TlsError::Pem {
            path: files.key.clone(),
            reason: "no PRIVATE KEY block in the file".to_string(),
        })?;
    // ring, as tonic's `tls-ring`: one crypto provider in the binary.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    let verifier = match auth {
        ClientAuth::Required => verifier,
        ClientAuth::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(|e| TlsError::Pem {
        path: files.ca.clone(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(bad(&files.cert))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs_in(&files.cert)?, key)
        .map_err(bad(&files.key))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client config presenting `files.cert` and verifying the server against `files.ca` under
/// the name `server_name` (a DNS name or IP address in the server certificate's SANs).
pub fn client_config(files: &TlsFiles, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
    let ca = read_ca(&files.ca)?;
    let identity = read_identity(files)?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(ca)
        .identity(identity)
        .domain_name(server_name))
}

/// A client config that verifies the server against the CA at `ca` but presents no certificate:
/// for clients that authenticate with a token to a server under [`ClientAuth::Optional`].
pub fn client_config_ca_only(ca: &Path, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
    Ok(ClientTlsConfig::new()
        .ca_certificate(read_ca(ca)?)
        .domain_name(server_name))
}

/// A daemon's `--tls-cert`, `--tls-key`, `--tls-ca` and `--insecure` flags (a clap argument
/// group with the `clap` feature), checked at start.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct TlsFlags {
    /// This daemon's certificate, from `berth certs scheduler|node NAME` (a node's CN must be
    /// its --node-name). With --tls-key and --tls-ca, turns on mutual TLS, and on a scheduler
    /// authentication of every caller.
    #[cfg_attr(feature = "clap", arg(long, value_name = "PEM"))]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert.
    #[cfg_attr(feature = "clap", arg(long, value_name = "PEM"))]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA that peers' certificates must chain to.
    #[cfg_attr(feature = "clap", arg(long, value_name = "PEM"))]
    pub tls_ca: Option<PathBuf>,
    /// Serve plaintext, to anyone, on a non-loopback address.
    #[cfg_attr(feature = "clap", arg(long))]
    pub insecure: bool,
}

impl TlsFlags {
    /// The files the flags name (all three or none: `None`), checked to hold a certificate of
    /// role `wanted`, with its identity.
    pub fn files(&self, wanted: Role) -> Result<Option<(TlsFiles, Identity)>, TlsError> {
        let (cert, key, ca) = (
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
        );
        let files = match (cert, key, ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => TlsFiles {
                ca: ca.to_path_buf(),
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            },
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    (cert.is_none(), "--tls-cert"),
                    (key.is_none(), "--tls-key"),
                    (ca.is_none(), "--tls-ca"),
                ]
                .into_iter()
                .filter_map(|(absent, flag)| absent.then_some(flag))
                .collect();
                return Err(TlsError::Incomplete {
                    verb: if missing.len() == 1 { "is" } else { "are" },
                    missing: missing.join(" and "),
                });
            }
        };
        let identity = Identity::from_pem_file(&files.cert)?;
        if identity.role != wanted {
            return Err(TlsError::WrongRole {
                path: files.cert.clone(),
                name: identity.common_name,
                found: identity.role,
                wanted,
            });
        }
        Ok(Some((files, identity)))
    }

    /// Refuses plaintext on a non-loopback `addr` unless --insecure.
    pub fn check_listen(&self, addr: &SocketAddr, tls: bool) -> Result<(), TlsError> {
        check_listen(addr, tls, self.insecure)
    }
}

/// The name a server's certificate must carry to be `uri`'s: its host, without the brackets
/// an IPv6 address has in a URI (certificates hold the bare address).
pub fn server_name(uri: &http::Uri) -> String {
    uri.host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// `addr` as a URL to dial: a bare `HOST:PORT` (as people write it, and as the CLI takes it)
/// gets `https://` when `tls`, `http://` otherwise; an address with a scheme is kept as given.
pub fn url(addr: &str, tls: bool) -> String {
    let addr = addr.trim();
    if addr.contains("://") {
        addr.to_string()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// Checks an address to dial (`HOST:PORT` or `http[s]://HOST:PORT`) before anything uses it,
/// so that a daemon refuses a malformed one at start instead of retrying it for ever. Returns
/// the URL it stands for (see [`url`]).
pub fn check_address(addr: &str, tls: bool) -> Result<String, TlsError> {
    let full = url(addr, tls);
    let bad = |reason: &str| TlsError::BadUrl {
        url: addr.to_string(),
        reason: reason.to_string(),
    };
    if addr.trim().is_empty() {
        return Err(bad("it is empty"));
    }
    let uri: http::Uri = full.parse().map_err(|e: http::uri::InvalidUri| {
        bad(&format!("{e} (expected HOST:PORT or http[s]://HOST:PORT)"))
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("the scheme must be http:// or https://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it names no host (expected HOST:PORT)"));
    }
    if uri.port_u16().is_none() {
        return Err(bad("it names no port (expected HOST:PORT)"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(bad("a gRPC address has no path"));
    }
    Ok(full)
}

/// The endpoint to dial `addr` at (checked by [`check_address`]). With `tls`, a bare
/// `HOST:PORT` or an `http://` URL is dialled as `https://` (an address given or learnt
/// without a scheme's care; a certificate is never meant to go over plaintext) and the server
/// must prove it is the URL's host.
pub fn dial(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, TlsError> {
    let url = check_address(addr, tls.is_some())?;
    let url = match (tls, url.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => url,
    };
    let bad = |reason: String| TlsError::BadUrl {
        url: url.clone(),
        reason,
    };
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| bad(e.to_string()))?;
    let Some(config) = tls else {
        return Ok(endpoint);
    };
    let host = server_name(endpoint.uri());
    endpoint
        .tls_config(config.clone().domain_name(host))
        .map_err(|e| bad(e.to_string()))
}

/// Refuses to serve plaintext beyond this machine: a non-loopback `addr` needs TLS unless the
/// operator said `insecure`.
pub fn check_listen(addr: &SocketAddr, tls: bool, insecure: bool) -> Result<(), TlsError> {
    if tls || insecure || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(TlsError::InsecureListen { addr: *addr })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            TlsError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            TlsError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

fn pem_blocks(path: &Path, bytes: &[u8]) -> Result<Vec<Pem>, TlsError> {
    let blocks = Pem::iter_from_buffer(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if blocks.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no PEM block in the file".to_string(),
        });
    }
    Ok(blocks)
}

/// The DER of the first certificate in a PEM file, checked to parse as X.509.
fn read_cert_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = read_file(path)?;
    let blocks = pem_blocks(path, &bytes)?;
    let mut der = None;
    for block in &blocks {
        if block.label != "CERTIFICATE" {
            continue;
        }
        block.parse_x509().map_err(|e| TlsError::BadCert {
            cert: CertSource::File(path.to_path_buf()),
            reason: e.to_string(),
        })?;
        der.get_or_insert_with(|| block.contents.clone());
    }
    der.ok_or_else(|| TlsError::Pem {
        path: path.to_path_buf(),
        reason: "no CERTIFICATE block in the file".to_string(),
    })
}

/// The CA file, checked: tonic would silently skip a certificate it cannot parse and then fail
/// at the first handshake with an empty trust store.
fn read_ca(path: &Path) -> Result<Certificate, TlsError> {
    read_cert_pem(path)?;
    Ok(Certificate::from_pem(read_file(path)?))
}

fn read_identity(files: &TlsFiles) -> Result<tonic::transport::Identity, TlsError> {
    read_cert_pem(&files.cert)?;
    let key = read_file(&files.key)?;
    let has_key = pem_blocks(&files.key, &key)?
        .iter()
        .any(|b| b.label.ends_with("PRIVATE KEY"));
    if !has_key {
        return Err(TlsError::Pem {
            path: files.key.clone(),
            reason: "no PRIVATE KEY block in the file".to_string(),
        });
    }
    Ok(tonic::transport::Identity::from_pem(
        read_file(&files.cert)?,
        key,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_flags_are_all_three_or_none() {
        assert!(
            TlsFlags::default()
                .files(Role::Scheduler)
                .unwrap()
                .is_none()
        );
        let flags = TlsFlags {
            tls_cert: Some("/x/cert.pem".into()),
            ..Default::default()
        };
        let err = flags.files(Role::Scheduler).unwrap_err().to_string();
        assert!(
            err.starts_with("--tls-key and --tls-ca are missing"),
            "{err}"
        );
    }

    #[test]
    fn bare_addresses_get_a_scheme() {
        assert_eq!(url("127.0.0.1:7700", false), "http://127.0.0.1:7700");
        assert_eq!(url("127.0.0.1:7700", true), "https://127.0.0.1:7700");
        assert_eq!(url("http://h:1", true), "http://h:1");
        for (addr, tls, want) in [
            ("127.0.0.1:7700", false, "http://127.0.0.1:7700/"),
            ("127.0.0.1:7700", true, "https://127.0.0.1:7700/"),
            ("[::1]:7700", false, "http://[::1]:7700/"),
            (
                "http://sched.example:7700",
                false,
                "http://sched.example:7700/",
            ),
        ] {
            let endpoint = dial(addr, None).map(|e| e.uri().to_string());
            if !tls {
                assert_eq!(endpoint.unwrap(), want, "{addr}");
            }
            assert_eq!(check_address(addr, tls).unwrap(), url(addr, tls), "{addr}");
        }
    }

    #[test]
    fn malformed_addresses_are_refused_naming_them() {
        for addr in [
            "",
            "127.0.0.1",
            "127.0.0.1:notaport",
            "127.0.0.1:99999",
            "ftp://127.0.0.1:21",
            "http://:7700",
            "http://127.0.0.1:7700/api",
            "127.0.0.1:7700 extra",
        ] {
            let err = check_address(addr, false).unwrap_err();
            assert!(matches!(err, TlsError::BadUrl { .. }), "{addr}: {err}");
            assert!(err.to_string().contains(&format!("{addr:?}")), "{err}");
            assert!(dial(addr, None).is_err(), "{addr}");
        }
    }

    #[test]
    fn loopback_listens_without_tls() {
        for addr in ["127.0.0.1:7000", "[::1]:7000", "127.8.9.10:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert!(check_listen(&addr, false, false).is_ok(), "{addr}");
        }
    }

    #[test]
    fn other_addresses_need_tls_or_insecure() {
        for addr in ["0.0.0.0:7000", "[::]:7000", "10.1.2.3:7000", "[fd00::1]:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let err = check_listen(&addr, false, false).unwrap_err();
            assert!(matches!(err, TlsError::InsecureListen { .. }), "{addr}");
            let text = err.to_string();
            assert!(
                text.contains("--tls-") && text.contains("--insecure"),
                "{text}"
            );
            assert!(text.contains(&addr.to_string()), "{text}");
            assert!(check_listen(&addr, true, false).is_ok());
            assert!(check_listen(&addr, false, true).is_ok());
        }
    }

    #[test]
    fn roles_round_trip_through_their_organization() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                Role::from_organization(&role.organization()),
                Some(Ok(role))
            );
        }
        assert_eq!(Role::Node.organization(), "berth:node");
    }

    #[test]
    fn role_parsing_is_strict() {
        assert_eq!(
            Role::from_organization("berth:root"),
            Some(Err("root".to_string()))
        );
        assert_eq!(
            Role::from_organization("berth:Admin"),
            Some(Err("Admin".to_string()))
        );
        assert_eq!(Role::from_organization("berth:"), Some(Err(String::new())));
        assert_eq!(Role::from_organization("Acme Corp"), None);
        assert_eq!(Role::from_organization("node"), None);
        assert!(" node".parse::<Role>().is_err());
        assert!("".parse::<Role>().is_err());
    }

    #[test]
    fn file_layout_matches_berth_certs() {
        let dir = Path::new("/pki");
        let files = TlsFiles::for_role(dir, Role::Deployer, "ci");
        assert_eq!(files, TlsFiles::in_dir(dir, "client-ci"));
        assert_eq!(files.ca, Path::new("/pki/ca.pem"));
        assert_eq!(files.cert, Path::new("/pki/client-ci.pem"));
        assert_eq!(files.key, Path::new("/pki/client-ci-key.pem"));
        let node = TlsFiles::for_role(dir, Role::Node, "n1");
        assert_eq!(node.key, Path::new("/pki/node-n1-key.pem"));
    }

    #[test]
    fn missing_and_garbled_files_name_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::in_dir(dir.path(), "node-a");
        let err = server_config(&files, ClientAuth::Required).unwrap_err();
        assert!(
            matches!(&err, TlsError::Missing { path } if *path == files.ca),
            "{err}"
        );

        std::fs::write(&files.ca, "not pem at all").unwrap();
        let err = client_config_ca_only(&files.ca, "localhost").unwrap_err();
        assert!(
            matches!(&err, TlsError::Pem { path, .. } if *path == files.ca),
            "{err}"
        );
        assert!(err.to_string().contains(&files.ca.display().to_string()));

        std::fs::write(
            &files.ca,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = Identity::from_pem_file(&files.ca).unwrap_err();
        assert!(
            matches!(&err, TlsError::BadCert { cert: CertSource::File(p), .. } if *p == files.ca),
            "{err}"
        );
    }

    #[test]
    fn garbage_peer_certificate_is_an_error_not_a_panic() {
        let err = Identity::from_der(b"\x30\x03\x02\x01\x00", CertSource::Peer).unwrap_err();
        assert!(err.to_string().starts_with("peer certificate"), "{err}");
    }
}
