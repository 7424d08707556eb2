//! What `berth config` and `berth secret` share: the value read from a file or standard input
//! (held in `Zeroizing`, at most 1 MiB, never echoed), the scheduler's ConfigService and
//! SecretService clients, and how a `FileInfo` (metadata only, never a value) is shown.

use std::fs::File;
use std::io::{IsTerminal as _, Read};
use std::path::PathBuf;

use anyhow::Context as _;
use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::config_service_client::ConfigServiceClient;
use berth_proto::v1::secret_service_client::SecretServiceClient;
use berth_proto::v1::{FileInfo, UpdateFileResponse};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::Context;
use crate::auth::AuthChannel;
use crate::output::{OutputFormat, human_bytes, print_json, print_rows, timestamp};

/// The largest config or secret value, as the scheduler enforces it
/// (`berth_scheduler::secrets::MAX_VALUE_BYTES`); checked here too so that a file too large
/// is refused before it is sent, naming its size.
pub(crate) const MAX_VALUE_BYTES: usize = 1 << 20;

/// Where a value comes from: `--from-file F`, or standard input (`-` or nothing).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ValueSource {
    /// Read the value from FILE (`-`: standard input, as when neither is given).
    #[arg(long, short = 'f', value_name = "FILE")]
    from_file: Option<PathBuf>,
    /// `-`: read the value from standard input.
    #[arg(value_name = "-", conflicts_with = "from_file")]
    stdin: Option<String>,
}

impl ValueSource {
    /// The file to read, or None for standard input.
    fn file(&self) -> anyhow::Result<Option<&PathBuf>> {
        // Not echoed: someone may have typed the secret itself here.
        if self.stdin.as_deref().is_some_and(|s| s != "-") {
            return Err(invalid(
                "unexpected argument after the name: give the value with --from-file FILE, or `-` for standard input (never on the command line)".into(),
            ));
        }
        Ok(self.from_file.as_ref().filter(|p| p.as_os_str() != "-"))
    }

    /// Reads the whole value; more than [`MAX_VALUE_BYTES`] is refused with its size.
    pub(crate) fn read(&self, what: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        match self.file()? {
            Some(path) => {
                let file =
                    File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                let origin = path.display().to_string();
                if usize::try_from(len).map_or(true, |l| l > MAX_VALUE_BYTES) {
                    return Err(invalid(format!(
                        "{what}: {origin} is {len} bytes: {}",
                        too_large()
                    )));
                }
                read_limited(file, &origin, what)
            }
            None => {
                let stdin = std::io::stdin();
                if stdin.is_terminal() {
                    return Err(invalid(format!(
                        "{what}: no --from-file and standard input is a terminal: pipe the value in, or pass --from-file FILE"
                    )));
                }
                read_limited(stdin.lock(), "standard input", what)
            }
        }
    }
}

/// Bad input: exit status 2, as a command line clap refuses.
fn invalid(message: String) -> anyhow::Error {
    crate::exit::refused(berth_proto::errors::ErrorKind::InvalidArgument, message)
}

fn too_large() -> String {
    format!("a config or secret holds at most {MAX_VALUE_BYTES} bytes (1 MiB)")
}

/// Reads at most one byte more than the limit into a buffer allocated once, so that no
/// reallocation leaves an unwiped copy of a secret behind.
fn read_limited(reader: impl Read, origin: &str, what: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_VALUE_BYTES + 1));
    reader
        .take(u64::try_from(MAX_VALUE_BYTES + 1)?)
        .read_to_end(&mut buf)
        .with_context(|| format!("{what}: reading {origin}"))?;
    if buf.len() > MAX_VALUE_BYTES {
        return Err(invalid(format!(
            "{what}: {origin} has more than {MAX_VALUE_BYTES} bytes: {}",
            too_large()
        )));
    }
    Ok(buf)
}

/// Runs `f` with a ConfigService client of the scheduler.
pub(crate) fn with_configs<T>(
    ctx: &Context,
    f: impl AsyncFnOnce(ConfigServiceClient<AuthChannel>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    crate::remote::block_on(async {
        let channel = crate::cluster::channel(ctx.scheduler()).await?;
        f(ConfigServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
        .await
    })
}

/// Runs `f` with a SecretService client of the scheduler.
pub(crate) fn with_secrets<T>(
    ctx: &Context,
    f: impl AsyncFnOnce(SecretServiceClient<AuthChannel>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    crate::remote::block_on(async {
        let channel = crate::cluster::channel(ctx.scheduler()).await?;
        f(SecretServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
        .await
    })
}

/// A config or secret as `ls` and `inspect` show it: metadata, never a value.
#[derive(Debug, Serialize)]
pub(crate) struct FileRow {
    pub name: String,
    pub version: u64,
    pub versions: Vec<u64>,
    pub size_bytes: u64,
    /// RFC 3339.
    pub created: String,
    pub updated: String,
    pub used_by: Vec<String>,
    /// Configs: the newest version's SHA-256.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// Secrets: the key-encryption key's id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_id: String,
}

impl From<FileInfo> for FileRow {
    fn from(f: FileInfo) -> Self {
        FileRow {
            name: f.name,
            version: f.version,
            versions: f.versions,
            size_bytes: f.size_bytes,
            created: timestamp(f.created_at_ms),
            updated: timestamp(f.updated_at_ms),
            used_by: f.used_by,
            sha256: f.sha256,
            key_id: f.key_id,
        }
    }
}

/// `ls`: a table, or a JSON array of [`FileRow`].
pub(crate) fn print_list(output: OutputFormat, files: Vec<FileInfo>) -> anyhow::Result<()> {
    let rows: Vec<FileRow> = files.into_iter().map(FileRow::from).collect();
    print_rows(
        output,
        &rows,
        &["NAME", "VERSION", "SIZE", "UPDATED", "USED BY"],
        |r| {
            vec![
                r.name.clone(),
                r.version.to_string(),
                human_bytes(r.size_bytes),
                r.updated.clone(),
                r.used_by.join(","),
            ]
        },
    )
}

/// `inspect` for people: one field a line.
pub(crate) fn print_details(row: &FileRow) {
    let versions: Vec<String> = row.versions.iter().map(u64::to_string).collect();
    println!("Name:      {}", row.name);
    println!("Version:   {} (kept: {})", row.version, versions.join(", "));
    println!("Size:      {}", human_bytes(row.size_bytes));
    if !row.sha256.is_empty() {
        println!("SHA-256:   {}", row.sha256);
    }
    if !row.key_id.is_empty() {
        println!("Key id:    {}", row.key_id);
    }
    println!("Created:   {}", row.created);
    println!("Updated:   {}", row.updated);
    let used = if row.used_by.is_empty() {
        "-".to_string()
    } else {
        row.used_by.join(", ")
    };
    println!("Used by:   {used}");
}

/// `create`: the new object's name and first version.
pub(crate) fn print_created(
    kind: &str,
    output: OutputFormat,
    info: FileInfo,
) -> anyhow::Result<()> {
    let row = FileRow::from(info);
    match output {
        OutputFormat::Json => print_json(&row),
        OutputFormat::Table => {
            println!(
                "created {kind} {} version {} ({})",
                row.name,
                row.version,
                human_bytes(row.size_bytes)
            );
            Ok(())
        }
    }
}

/// What `update -o json` prints.
#[derive(Debug, Serialize)]
struct Updated {
    name: String,
    version: u64,
    changed: bool,
    /// Deployments that got a new revision (their rollouts started).
    rolled: Vec<String>,
}

/// `update`: the new version and the deployments whose rollout it started.
pub(crate) fn print_updated(
    kind: &str,
    name: &str,
    output: OutputFormat,
    reply: UpdateFileResponse,
) -> anyhow::Result<()> {
    let updated = Updated {
        name: reply.info.as_ref().map_or(name, |i| &i.name).to_string(),
        version: reply.info.as_ref().map_or(0, |i| i.version),
        changed: reply.changed,
        rolled: reply.rolled,
    };
    match output {
        OutputFormat::Json => print_json(&updated),
        OutputFormat::Table => {
            let (n, v) = (&updated.name, updated.version);
            if !updated.changed {
                println!("{kind} {n} unchanged: the content is version {v}'s");
            } else if updated.rolled.is_empty() {
                println!("{kind} {n} version {v}; no deployment uses it");
            } else {
                println!(
                    "{kind} {n} version {v}; rolling {}",
                    updated.rolled.join(", ")
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_over_the_limit_are_refused_with_their_size() {
        let exact = vec![b'x'; MAX_VALUE_BYTES];
        let read = read_limited(exact.as_slice(), "stdin", "secret s").unwrap();
        assert_eq!(read.len(), MAX_VALUE_BYTES);
        let over = vec![b'x'; MAX_VALUE_BYTES + 1];
        let e = read_limited(over.as_slice(), "standard input", "secret s")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("secret s") && e.contains("1048576") && e.contains("1 MiB"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, &over).unwrap();
        let source = ValueSource {
            from_file: Some(big.clone()),
            stdin: None,
        };
        let e = crate::chain(&source.read("config c").unwrap_err());
        assert!(
            e.contains(&big.display().to_string()) && e.contains("1048577 bytes"),
            "{e}"
        );
        let kind = crate::exit::kind_of(&source.read("config c").unwrap_err());
        assert_eq!(kind, berth_proto::errors::ErrorKind::InvalidArgument);
        let small = dir.path().join("small");
        std::fs::write(&small, b"k=v\n").unwrap();
        let source = ValueSource {
            from_file: Some(small),
            stdin: None,
        };
        assert_eq!(source.read("config c").unwrap().as_slice(), b"k=v\n");
    }

    #[test]
    fn only_a_dash_may_stand_for_standard_input() {
        let source = ValueSource {
            from_file: None,
            stdin: Some("hunter2-marker".into()),
        };
        let e = crate::chain(&source.read("secret s").unwrap_err());
        assert!(
            e.contains("--from-file") && e.contains("unexpected argument"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "the argument is not echoed: {e}");
        let source = ValueSource {
            from_file: Some(PathBuf::from("-")),
            stdin: None,
        };
        assert!(source.file().unwrap().is_none(), "--from-file - is stdin");
    }

    #[test]
    fn a_missing_file_is_named() {
        let source = ValueSource {
            from_file: Some(PathBuf::from("/nonexistent/berth-value")),
            stdin: None,
        };
        let e = crate::chain(&source.read("config c").unwrap_err());
        assert!(e.contains("/nonexistent/berth-value"), "{e}");
    }
}
