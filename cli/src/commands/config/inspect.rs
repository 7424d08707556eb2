//! `berth config inspect NAME [--version N]`: a config's metadata and the content of the
//! newest version (or version N).

use std::io::Write as _;

use anyhow::Context as _;
use base64::Engine as _;
use berth_proto::v1::GetFileRequest;
use serde::Serialize;

use crate::Context;
use crate::files::{FileRow, print_details, with_configs};
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(value_parser = crate::files::parse_name)]
    name: String,
    /// The version to show (default: the newest).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    version: Option<u64>,
}

/// What `-o json` prints: the metadata, the version shown and its content (as text when it
/// is UTF-8, base64 otherwise).
#[derive(Debug, Serialize)]
struct Inspected {
    #[serde(flatten)]
    info: FileRow,
    shown_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let version = args.version.unwrap_or(0);
    let request = GetFileRequest {
        name: args.name,
        version,
    };
    let reply = with_configs(ctx, async |mut client| client.get_config(request).await)?;
    let info = FileRow::from(reply.info.unwrap_or_default());
    let shown_version = if version == 0 { info.version } else { version };
    match ctx.output() {
        OutputFormat::Json => {
            let (data, data_base64) = match String::from_utf8(reply.data) {
                Ok(text) => (Some(text), None),
                Err(e) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
                ),
            };
            print_json(&Inspected {
                info,
                shown_version,
                data,
                data_base64,
            })
        }
        OutputFormat::Table => {
            print_details(&info);
            println!("Content of version {shown_version}:");
            // Byte for byte, as the containers see the file.
            let mut out = std::io::stdout().lock();
            out.write_all(&reply.data)
                .and_then(|()| out.flush())
                .context("writing the config's content")
        }
    }
}
