//! `berth image tag SRC DST`: give an image in the store another name (the same manifest).

use anyhow::{Context as _, bail};
use berth_images::Reference;
use serde::Serialize;

use crate::Context;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The image to name: a name (`busybox:latest`) or manifest digest (or a unique prefix).
    source: String,
    /// The new name, `[registry[:port]/]repository[:tag]`; an image of that name is replaced.
    target: String,
}

#[derive(Debug, Serialize)]
struct Summary {
    source: String,
    name: String,
    digest: String,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let target = Reference::parse(&args.target)?;
    if target.digest.is_some() {
        // A digest names content; a name pointing a digest at other content would lie.
        bail!(
            "the new name {:?} holds a digest: give `repository[:tag]`",
            args.target
        );
    }
    let store = super::open_store(ctx)?;
    let image = store
        .image(&args.source)
        .with_context(|| format!("tagging {:?}", args.source))?;
    store
        .tag(&target, &image.manifest_descriptor)
        .with_context(|| format!("naming {} {target}", image.digest()))?;
    let summary = Summary {
        source: image.name.clone(),
        name: target.to_string(),
        digest: image.digest().to_string(),
    };
    match ctx.output() {
        OutputFormat::Json => print_json(&summary),
        OutputFormat::Table => {
            println!("Tagged: {} ({})", summary.name, summary.digest);
            Ok(())
        }
    }
}
