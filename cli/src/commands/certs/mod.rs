//! `berth certs ...`: a cluster CA and the certificates of nodes, schedulers and clients, for
//! mutual TLS (layout in `berth_proto::tls`); `init` also writes the scheduler's secrets key
//! (DIR/secrets.key) when there is none.

use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Context;
use crate::output::{OutputFormat, print_json};

mod init;
mod issue;

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Create the cluster CA (ECDSA P-256): DIR/ca.pem and DIR/ca-key.pem.
    Init(init::Args),
    /// Issue an agent's certificate (O=berth:node; server and client): DIR/node-NAME.pem.
    Node(issue::ServerArgs),
    /// Issue a scheduler's certificate (O=berth:scheduler; server and client):
    /// DIR/scheduler-NAME.pem.
    Scheduler(issue::ServerArgs),
    /// Issue a client certificate for a person or pipeline (O=berth:ROLE): DIR/client-NAME.pem.
    Client(issue::ClientArgs),
}

pub(crate) fn run(command: CertsCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init(args) => init::run(args, ctx),
        CertsCommand::Node(args) => issue::run_server(args, berth_proto::tls::Role::Node, ctx),
        CertsCommand::Scheduler(args) => {
            issue::run_server(args, berth_proto::tls::Role::Scheduler, ctx)
        }
        CertsCommand::Client(args) => issue::run_client(args, ctx),
    }
}

/// What every `berth certs` subcommand takes.
#[derive(Debug, clap::Args)]
struct CommonArgs {
    /// Directory of the CA and the certificates [default: <data-dir>/pki].
    #[arg(long, env = "BERTH_PKI_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// How many days the certificate is valid, counted from its start (see --backdate-days).
    #[arg(long, value_name = "N", default_value_t = 365,
          value_parser = clap::value_parser!(u32).range(1..=36500))]
    days: u32,
    /// Start the validity N days in the past, for peers whose clocks run behind; the end moves
    /// back by as much, since --days counts from the start.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=36500))]
    backdate_days: u32,
    /// Replace files that already exist.
    #[arg(long)]
    force: bool,
}

impl CommonArgs {
    fn dir(&self, ctx: &Context) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| ctx.data_dir.join("pki"))
    }

    /// The validity window, whole seconds since that is all X.509 keeps (so the JSON printed
    /// matches the certificate).
    fn validity(&self) -> anyhow::Result<(OffsetDateTime, OffsetDateTime)> {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .context("truncating the clock to seconds")?;
        let not_before = now - time::Duration::days(i64::from(self.backdate_days));
        let not_after = not_before + time::Duration::days(i64::from(self.days));
        Ok((not_before, not_after))
    }
}

/// What was written, as `--output json` prints it.
#[derive(Debug, Serialize)]
struct Written {
    kind: &'static str,
    common_name: String,
    /// The berth role (`O=berth:<role>`); none for the CA.
    role: Option<&'static str>,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    not_before: String,
    not_after: String,
    dns_names: Vec<String>,
    ip_addresses: Vec<String>,
    /// `certs init`: the secrets key it wrote beside the CA (none when one was there).
    #[serde(skip_serializing_if = "Option::is_none")]
    secrets_key: Option<crate::commands::secret::init_key::KeyWritten>,
}

impl Written {
    fn print(&self, format: OutputFormat) -> anyhow::Result<()> {
        match format {
            OutputFormat::Json => print_json(self),
            OutputFormat::Table => {
                let role = self
                    .role
                    .map(|r| format!(", O=berth:{r}"))
                    .unwrap_or_default();
                println!("wrote {} and {}", self.cert.display(), self.key.display());
                println!("  CN={}{role}", self.common_name);
                println!("  valid {} to {}", self.not_before, self.not_after);
                let sans: Vec<String> = self
                    .dns_names
                    .iter()
                    .map(|d| format!("DNS:{d}"))
                    .chain(self.ip_addresses.iter().map(|i| format!("IP:{i}")))
                    .collect();
                if !sans.is_empty() {
                    println!("  names {}", sans.join(", "));
                }
                if let Some(key) = &self.secrets_key {
                    println!(
                        "wrote {} (key id {}) for berth-scheduler --secrets-key",
                        key.path.display(),
                        key.key_id
                    );
                }
                Ok(())
            }
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> anyhow::Result<String> {
    t.format(&Rfc3339).context("formatting a timestamp")
}

/// Creates the PKI directory, owner-only since it holds private keys (an existing directory
/// keeps its mode: the operator may have chosen it).
pub(crate) fn create_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Fails naming the first of `paths` that exists, unless `force`.
pub(crate) fn refuse_existing(paths: &[&Path], force: bool, what: &str) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    for path in paths {
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists: refusing to replace {what} (pass --force to replace it)",
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes `contents` to `path` with `mode` atomically: a temp file in the same directory,
/// synced, then renamed over `path`, so a reader never sees half a key and a crash leaves
/// either the old file or the new one. Without `replace`, an existing `path` is an error even
/// if it appeared since the caller checked (hard_link does not replace).
pub(crate) fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    replace: bool,
) -> anyhow::Result<()> {
    let opts = berth_runtime::sys::fs::WriteOptions {
        mode,
        replace,
        ..Default::default()
    };
    berth_runtime::sys::fs::atomic_write_with(path, contents, opts)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_the_mode_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_atomic(&path, b"one", 0o600, false).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        assert!(write_atomic(&path, b"two", 0o600, false).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomic(&path, b"three", 0o600, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temp files left behind: {left:?}");
    }
}
