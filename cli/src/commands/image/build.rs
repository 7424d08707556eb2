//! `berth image build --from-dir DIR --tag T`: one new layer from a directory, on a base image
//! or nothing, with config settings.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use berth_images::Reference;
use berth_images::build::{BuildOptions, build};
use serde::Serialize;

use super::summary::ImageDigests;
use crate::Context;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
COMMAND ARGUMENTS: --cmd and --entrypoint take one argument each and are repeatable: \
`--cmd /bin/sh --cmd -c --cmd 'echo hi'` is [\"/bin/sh\", \"-c\", \"echo hi\"]. A single value \
starting with '[' is read as a JSON array instead (docker's exec form): \
`--cmd '[\"/bin/sh\", \"-c\", \"echo hi\"]'`. Use `--cmd ''` alone to clear the base's cmd.

The image's `created` time is now, or SOURCE_DATE_EPOCH when set (for reproducible builds). \
The layer itself depends only on the directory's contents and metadata.")]
pub(crate) struct Args {
    /// The directory whose contents become the image's new layer.
    #[arg(long, value_name = "DIR")]
    from_dir: PathBuf,
    /// The name of the new image, NAME[:TAG].
    #[arg(long)]
    tag: Reference,
    /// Build on this image (its layers and config); otherwise on an empty linux/amd64 image.
    #[arg(long, value_name = "REF")]
    base: Option<String>,
    /// The default command, one argument per --cmd (or one JSON array); see below.
    #[arg(long = "cmd", value_name = "ARG", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// The entrypoint, one argument per --entrypoint (or one JSON array); clears the base's
    /// cmd unless --cmd is given too.
    #[arg(long = "entrypoint", value_name = "ARG", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// An environment variable, merged by name into the base's (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// The working directory of the image's processes.
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// The user the image's processes run as (user, uid, user:group, uid:gid).
    #[arg(long)]
    user: Option<String>,
    /// A label, merged into the base's (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_pair)]
    labels: Vec<(String, String)>,
    /// A port to expose, such as 8080/tcp (repeatable).
    #[arg(long = "expose", value_name = "PORT[/PROTO]")]
    exposed_ports: Vec<String>,
    /// Delete PATH of the lower layers in this layer (a `.wh.` entry); PATH ending in '/' makes
    /// that directory opaque instead (repeatable).
    #[arg(long = "whiteout", value_name = "PATH")]
    whiteouts: Vec<String>,
}

pub(crate) fn parse_pair(input: &str) -> Result<(String, String), String> {
    input
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{input:?} is not KEY=VALUE"))
}

/// Repeated arguments, or one JSON array; `None` when the option was not given; `['']` clears.
fn command_args(option: &str, values: Vec<String>) -> anyhow::Result<Option<Vec<String>>> {
    match values.as_slice() {
        [] => Ok(None),
        [only] if only.is_empty() => Ok(Some(Vec::new())),
        [only] if only.trim_start().starts_with('[') => {
            serde_json::from_str(only).map(Some).with_context(|| {
                format!("{option} {only:?} starts with '[' but is not a JSON array of strings")
            })
        }
        _ => Ok(Some(values)),
    }
}

/// Now, or SOURCE_DATE_EPOCH when it is set.
pub(crate) fn created_time() -> anyhow::Result<SystemTime> {
    Ok(source_date_epoch()?
        .map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds))
        .unwrap_or_else(SystemTime::now))
}

/// SOURCE_DATE_EPOCH's seconds, when it is set.
pub(crate) fn source_date_epoch() -> anyhow::Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds")),
        Err(_) => Ok(None),
    }
}

#[derive(Debug, Serialize)]
struct Built {
    #[serde(flatten)]
    image: ImageDigests,
    diff_ids: Vec<String>,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let store = super::open_store(ctx)?;
    let mut options = BuildOptions::new(&args.from_dir, args.tag);
    options.base = args.base;
    options.cmd = command_args("--cmd", args.cmd)?;
    options.entrypoint = command_args("--entrypoint", args.entrypoint)?;
    options.env = args.env;
    options.workdir = args.workdir;
    options.user = args.user;
    options.labels = args.labels;
    options.exposed_ports = args.exposed_ports;
    options.whiteouts = args.whiteouts;
    options.created = created_time()?;
    let progress = crate::progress::for_terminal();
    let image = build(&store, &options, progress.as_ref())
        .with_context(|| format!("building {} from {}", options.tag, args.from_dir.display()))?;
    let built = Built {
        image: ImageDigests::of(&image),
        diff_ids: image.config.rootfs().diff_ids().clone(),
    };
    match ctx.output() {
        OutputFormat::Json => print_json(&built),
        OutputFormat::Table => {
            println!(
                "Built {} {} ({} layers)",
                built.image.name,
                built.image.digest,
                built.image.layers.len()
            );
            Ok(())
        }
    }
}
