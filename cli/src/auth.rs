//! Credentials for talking to the scheduler and agents: the global `--tls-ca`, `--tls-cert`,
//! `--tls-key` and `--token` flags, and the channel every client is built on. `https://`
//! addresses get TLS (verifying the server against `--tls-ca`, presenting `--tls-cert` if
//! given); the token goes in every request's `authorization` header, over TLS only, since
//! a bearer token sent in plaintext is a token given away.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use berth_proto::tls::{self, TlsFiles};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The global credential flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct CredentialArgs {
    /// The cluster CA to verify https:// schedulers and agents against.
    #[arg(long, global = true, env = "BERTH_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate to present over https:// (with --tls-key), e.g. from
    /// `berth certs client NAME --role ROLE`.
    #[arg(long, global = true, env = "BERTH_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert.
    #[arg(long, global = true, env = "BERTH_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// A bearer token from `berth token create`, sent to https:// schedulers.
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Set once by main before any command runs; commands deep down dial with it, so it is not
/// threaded through every subcommand's arguments.
static CREDENTIALS: OnceLock<CredentialArgs> = OnceLock::new();

pub(crate) fn init(credentials: CredentialArgs) {
    let _ = CREDENTIALS.set(credentials);
}

fn credentials() -> &'static CredentialArgs {
    CREDENTIALS.get_or_init(CredentialArgs::default)
}

/// Whether --tls-ca (or BERTH_TLS_CA) is given: then a bare HOST:PORT means https.
pub(crate) fn tls_ca_given() -> bool {
    credentials().tls_ca.is_some()
}

/// Adds `authorization: Bearer <token>` to every request, when there is a token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// What clients of the scheduler and agents run on.
pub(crate) type AuthChannel = InterceptedService<Channel, Bearer>;

/// Connects to `url` (`what` names the peer in errors) with the global credentials.
pub(crate) async fn connect(url: &str, what: &str) -> anyhow::Result<AuthChannel> {
    let (endpoint, bearer) = endpoint(url, what, credentials())?;
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {what} at {url}"))?;
    Ok(InterceptedService::new(channel, bearer))
}

fn endpoint(url: &str, what: &str, creds: &CredentialArgs) -> anyhow::Result<(Endpoint, Bearer)> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("invalid address of {what} {url:?}"))?
        .connect_timeout(Duration::from_secs(5));
    if endpoint.uri().scheme_str() != Some("https") {
        return Ok((endpoint, Bearer::default()));
    }
    let Some(ca) = &creds.tls_ca else {
        bail!("{url} is https: pass --tls-ca (or BERTH_TLS_CA) to verify {what}");
    };
    let host = tls::server_name(endpoint.uri());
    let config = match (&creds.tls_cert, &creds.tls_key) {
        (Some(cert), Some(key)) => tls::client_config(
            &TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            },
            &host,
        )?,
        (None, None) => tls::client_config_ca_only(ca, &host)?,
        (Some(_), None) => bail!("--tls-cert needs --tls-key (or BERTH_TLS_KEY)"),
        (None, Some(_)) => bail!("--tls-key needs --tls-cert (or BERTH_TLS_CERT)"),
    };
    endpoint = endpoint
        .tls_config(config)
        .with_context(|| format!("TLS for {what} at {url}"))?;
    let bearer = match &creds.token {
        None => Bearer::default(),
        Some(token) => Bearer(Some(
            format!("Bearer {}", token.trim())
                .parse()
                .context("--token: not a valid header value")?,
        )),
    };
    Ok((endpoint, bearer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_gets_no_token_and_https_needs_a_ca() {
        let creds = CredentialArgs {
            token: Some("berth_0123456789abcdef_x".into()),
            ..Default::default()
        };
        let (_, bearer) = endpoint("http://127.0.0.1:1", "the scheduler", &creds).unwrap();
        assert!(bearer.0.is_none());
        let err = endpoint("https://127.0.0.1:1", "the scheduler", &creds)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tls-ca"), "{err}");
    }
}
