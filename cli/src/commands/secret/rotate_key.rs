//! `berth secret rotate-key --new-key FILE`: the scheduler re-wraps every secret's data key
//! with the key in FILE (a path on the scheduler's host) and uses that key from then on.
//! Prints the old and new key ids, never a key.

use std::path::PathBuf;

use anyhow::Context as _;
use berth_proto::secrets_key::{SecretsKey, SecretsKeyError};
use berth_proto::v1::RotateSecretsKeyRequest;
use serde::Serialize;

use crate::Context;
use crate::files::with_secrets;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The new key file (as `berth secret init-key` writes it) on the scheduler's host.
    #[arg(long, value_name = "FILE")]
    new_key: PathBuf,
}

/// What `-o json` prints.
#[derive(Debug, Serialize)]
struct Rotated {
    old_key_id: String,
    new_key_id: String,
    rewrapped: u32,
    new_key_file: String,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    // The scheduler opens the path itself; a relative one means nothing to it.
    let path = std::path::absolute(&args.new_key)
        .with_context(|| format!("resolving {}", args.new_key.display()))?;
    check_local_copy(&path)?;
    let request = RotateSecretsKeyRequest {
        new_key_file: path.display().to_string(),
    };
    let reply = with_secrets(ctx, async |mut client| {
        client.rotate_secrets_key(request).await
    })?;
    let rotated = Rotated {
        old_key_id: reply.old_key_id,
        new_key_id: reply.new_key_id,
        rewrapped: reply.rewrapped,
        new_key_file: path.display().to_string(),
    };
    match ctx.output() {
        OutputFormat::Json => print_json(&rotated),
        OutputFormat::Table => {
            println!(
                "rotated the secrets key {} -> {} ({} re-wrapped)",
                rotated.old_key_id, rotated.new_key_id, rotated.rewrapped
            );
            eprintln!(
                "from now on start berth-scheduler with --secrets-key {}: the old key no longer opens the secrets",
                rotated.new_key_file
            );
            Ok(())
        }
    }
}

/// When the key file is on this machine too (the scheduler is local), a bad file is refused
/// here with the loader's message; a file this user cannot see or read (only the scheduler's
/// host or user can) is the scheduler's to check.
fn check_local_copy(path: &std::path::Path) -> anyhow::Result<()> {
    match SecretsKey::load(path) {
        Ok(_) | Err(SecretsKeyError::Missing { .. } | SecretsKeyError::Read { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
