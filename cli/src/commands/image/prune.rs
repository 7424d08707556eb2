//! `berth image prune`: delete what no image refers to.

use crate::Context;
use crate::output::{OutputFormat, human_bytes, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(super) fn run(_args: Args, ctx: &Context) -> anyhow::Result<()> {
    let store = super::open_store(ctx)?;
    // Layers under container root filesystems stay even when no image names them any more.
    let report = berth_images::snapshot::prune(&store)?;
    match ctx.output() {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Table => {
            for blob in &report.blobs_removed {
                println!("deleted blob  {blob}");
            }
            for layer in &report.layers_removed {
                println!("deleted layer {layer}");
            }
            println!(
                "Reclaimed {} ({} blobs, {} layers)",
                human_bytes(report.bytes_freed),
                report.blobs_removed.len(),
                report.layers_removed.len()
            );
            Ok(())
        }
    }
}
