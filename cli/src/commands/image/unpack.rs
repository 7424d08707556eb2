//! `berth image unpack REF DIR`: an image's layers flattened into a root filesystem directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use berth_images::unpack::{UnpackOptions, unpack_flat_report};
use serde::Serialize;

use crate::Context;
use crate::output::{OutputFormat, human_bytes, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The image: a name (busybox:latest) or a manifest digest or unique prefix of one.
    reference: String,
    /// Where the root filesystem goes; it must not exist or be an empty directory.
    dir: PathBuf,
    /// Refuse a layer whose uncompressed size passes this many bytes.
    #[arg(long, default_value_t = berth_images::unpack::DEFAULT_MAX_LAYER_BYTES)]
    max_layer_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Summary {
    image: String,
    digest: String,
    dir: PathBuf,
    layers: usize,
    entries: u64,
    bytes: u64,
    seconds: f64,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let store = super::open_store(ctx)?;
    let image = store.image(&args.reference)?;
    let opts = UnpackOptions {
        max_layer_bytes: args.max_layer_bytes,
        ..UnpackOptions::default()
    };
    let progress = crate::progress::for_terminal();
    let started = Instant::now();
    let report = unpack_flat_report(&store, &image, &args.dir, &opts, progress.as_ref())
        .with_context(|| format!("unpacking into {}", args.dir.display()))?;
    let summary = Summary {
        image: image.name.clone(),
        digest: image.digest().to_string(),
        dir: args.dir,
        layers: report.layers,
        entries: report.entries,
        bytes: report.bytes,
        seconds: started.elapsed().as_secs_f64(),
    };
    match ctx.output() {
        OutputFormat::Json => print_json(&summary),
        OutputFormat::Table => {
            println!(
                "Unpacked {} into {}: {} layers, {} entries, {} in {:.2} s",
                summary.image,
                summary.dir.display(),
                summary.layers,
                summary.entries,
                human_bytes(summary.bytes),
                summary.seconds
            );
            Ok(())
        }
    }
}
