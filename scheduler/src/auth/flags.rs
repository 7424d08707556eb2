//! The scheduler's `--tls-cert`, `--tls-key`, `--tls-ca` and `--insecure` flags, checked at
//! start: all three files or none, and a certificate that says it belongs to a scheduler.

use std::net::SocketAddr;
use std::path::PathBuf;

use berth_proto::tls::{self, Role, TlsError, TlsFiles};

/// Mutual TLS for the scheduler's listener and its calls to agents.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsFlags {
    /// This scheduler's certificate (O=berth:scheduler), e.g. from `berth certs scheduler NAME`.
    /// With --tls-key and --tls-ca, turns on TLS and authentication.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA that client and agent certificates must chain to.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Serve plaintext, with no authentication, on a non-loopback address.
    #[arg(long)]
    pub insecure: bool,
}

impl TlsFlags {
    /// The files, checked to exist and hold a certificate of role `wanted`; `None` when no TLS
    /// flag is given.
    pub fn files(&self, wanted: Role) -> Result<Option<TlsFiles>, TlsError> {
        let files = tls::files_from_flags(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
            wanted,
        )?;
        Ok(files.map(|(files, _)| files))
    }

    /// Refuses plaintext on a non-loopback `addr` unless --insecure.
    pub fn check_listen(&self, addr: &SocketAddr, tls: bool) -> Result<(), TlsError> {
        tls::check_listen(addr, tls, self.insecure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_or_none() {
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
}
