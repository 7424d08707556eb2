//! How configs and secrets are shown: their metadata (`FileInfo`), never a value.

use berth_proto::v1::{FileInfo, UpdateFileResponse};
use serde::Serialize;

use super::Kind;
use crate::output::{OutputFormat, human_bytes, print_json, print_rows, timestamp};

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
pub(super) fn print_list(output: OutputFormat, files: Vec<FileInfo>) -> anyhow::Result<()> {
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
pub(super) fn print_created(
    kind: Kind,
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
pub(super) fn print_updated(
    kind: Kind,
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
