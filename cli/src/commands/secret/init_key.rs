//! `berth secret init-key [--out FILE] [--force]`: a new key-encryption key for
//! `berth-scheduler --secrets-key FILE`, written atomically with mode 0600. Prints the key's
//! id, never the key. `berth certs init` and `berth up` make one the same way when absent.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use berth_proto::secrets_key::{KEY_FILE_MODE, SecretsKey};
use serde::Serialize;

use crate::Context;
use crate::commands::certs::{create_dir, refuse_existing, write_atomic};
use crate::output::{OutputFormat, print_json};

/// The key file's name in the PKI directory, next to the cluster CA.
pub(crate) const SECRETS_KEY_FILE: &str = "secrets.key";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to write the key [default: <pki-dir>/secrets.key, the PKI dir being
    /// BERTH_PKI_DIR or <data-dir>/pki].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace an existing key file. Secrets sealed with the old key can then only be opened
    /// with a copy of it: rotate with `berth secret rotate-key` instead.
    #[arg(long)]
    force: bool,
}

/// What was written, as `-o json` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct KeyWritten {
    pub path: PathBuf,
    pub key_id: String,
}

/// `<pki-dir>/secrets.key`: BERTH_PKI_DIR as `berth certs` reads it, or `<data-dir>/pki`.
pub(crate) fn default_path(ctx: &Context) -> PathBuf {
    std::env::var_os("BERTH_PKI_DIR")
        .map_or_else(|| ctx.data_dir.join("pki"), PathBuf::from)
        .join(SECRETS_KEY_FILE)
}

/// Generates a key and writes it to `path` (mode 0600, fsynced, renamed into place); an
/// existing file is an error unless `replace`.
pub(crate) fn write_new_key(path: &Path, replace: bool) -> anyhow::Result<KeyWritten> {
    refuse_existing(&[path], replace, "a secrets key")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    let key = SecretsKey::generate().context("generating a secrets key")?;
    write_atomic(path, &key.encode(), KEY_FILE_MODE, replace)?;
    Ok(KeyWritten {
        path: path.to_path_buf(),
        key_id: key.id().to_string(),
    })
}

/// Writes a new key to `path` unless a file is there already (then Ok(None)): for
/// `berth certs init` and `berth up`, which must never replace a key secrets depend on.
pub(crate) fn ensure_key(path: &Path) -> anyhow::Result<Option<KeyWritten>> {
    if path.symlink_metadata().is_ok() {
        return Ok(None);
    }
    write_new_key(path, false).map(Some)
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let path = args.out.unwrap_or_else(|| default_path(ctx));
    let written = write_new_key(&path, args.force)?;
    match ctx.output() {
        OutputFormat::Json => print_json(&written),
        OutputFormat::Table => {
            println!(
                "wrote {} (key id {})",
                written.path.display(),
                written.key_id
            );
            eprintln!(
                "start berth-scheduler with --secrets-key {}; keep a copy somewhere safe: without it no secret can be read",
                written.path.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_new_key_is_owner_only_loads_and_is_never_replaced_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pki/secrets.key");
        let written = write_new_key(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let loaded = SecretsKey::load(&path).unwrap();
        assert_eq!(loaded.id(), written.key_id);
        let text = std::fs::read_to_string(&path).unwrap();

        let e = crate::chain(&write_new_key(&path, false).unwrap_err());
        assert!(e.contains("already exists") && e.contains("--force"), "{e}");
        assert!(
            ensure_key(&path).unwrap().is_none(),
            "an existing key is kept"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

        let replaced = write_new_key(&path, true).unwrap();
        assert_ne!(replaced.key_id, written.key_id);
        assert_eq!(SecretsKey::load(&path).unwrap().id(), replaced.key_id);

        let other = dir.path().join("other.key");
        let made = ensure_key(&other).unwrap().expect("absent: written");
        assert_eq!(SecretsKey::load(&other).unwrap().id(), made.key_id);
    }
}
