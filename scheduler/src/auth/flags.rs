//! The scheduler's `--tls-cert`, `--tls-key`, `--tls-ca` and `--insecure` flags, checked at
//! start: all three files or none, and a certificate that says it belongs to a scheduler.

use std::net::SocketAddr;
use std::path::PathBuf;

use berth_proto::tls::{self, Identity, Role, TlsError, TlsFiles};

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

/// Why the TLS flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    #[error("{missing} {verb} missing: --tls-cert, --tls-key and --tls-ca go together")]
    Incomplete { missing: String, verb: &'static str },
    #[error(transparent)]
    Tls(#[from] TlsError),
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

impl TlsFlags {
    /// The files, checked to exist and hold a certificate of role `wanted`; `None` when no TLS
    /// flag is given.
    pub fn files(&self, wanted: Role) -> Result<Option<TlsFiles>, FlagsError> {
        let files = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
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
                return Err(FlagsError::Incomplete {
                    verb: if missing.len() == 1 { "is" } else { "are" },
                    missing: missing.join(" and "),
                });
            }
        };
        let identity = Identity::from_pem_file(&files.cert)?;
        if identity.role != wanted {
            return Err(FlagsError::WrongRole {
                path: files.cert.clone(),
                name: identity.common_name,
                found: identity.role,
                wanted,
            });
        }
        Ok(Some(files))
    }

    /// Refuses plaintext on a non-loopback `addr` unless --insecure.
    pub fn check_listen(&self, addr: &SocketAddr, tls: bool) -> Result<(), FlagsError> {
        Ok(tls::check_listen(addr, tls, self.insecure)?)
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
