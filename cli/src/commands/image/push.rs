//! `berth image push REF`: send an image from the store to a registry, blobs first and the
//! manifest last.

use anyhow::{Context as _, bail};
use berth_images::Reference;
use berth_images::registry::{PushOptions, PushedBlob, push};
use serde::Serialize;

use super::pull::Login;
use crate::Context;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The image in the store (`registry[:port]/repository[:tag]`); it is pushed under this name
    /// unless `--dest` gives another.
    reference: String,
    /// Push under this name instead: `registry[:port]/repository[:tag]`.
    #[arg(long)]
    dest: Option<String>,
    /// Speak plain HTTP to the registry (loopback registries always get plain HTTP).
    #[arg(long)]
    plain_http: bool,
    #[command(flatten)]
    login: Login,
}

#[derive(Debug, Serialize)]
struct Summary {
    source: String,
    name: String,
    digest: String,
    blobs_uploaded: usize,
    blobs_mounted: usize,
    blobs_present: usize,
    bytes_uploaded: u64,
    blobs: Vec<PushedBlob>,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let store = super::open_store(ctx)?;
    let image = store.image(&args.reference)?;
    let destination = destination(&args, &image)?;
    let credentials = args.login.credentials()?;
    let options = PushOptions {
        plain_http: args.plain_http,
        credentials,
        ..PushOptions::default()
    };
    let progress = crate::progress::for_terminal();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let pushed = runtime.block_on(push(
        &store,
        &image,
        &destination,
        &options,
        progress.as_ref(),
    ))?;
    let summary = Summary {
        source: image.name.clone(),
        name: destination.to_string(),
        digest: pushed.digest.to_string(),
        blobs_uploaded: pushed.count("uploaded"),
        blobs_mounted: pushed.count("mounted"),
        blobs_present: pushed.count("present"),
        bytes_uploaded: pushed.blobs.iter().map(|b| b.bytes_uploaded).sum(),
        blobs: pushed.blobs,
    };
    match ctx.output() {
        OutputFormat::Json => print_json(&summary),
        OutputFormat::Table => {
            println!("Pushed: {}", summary.name);
            // The bare digest last, for scripts: `DIGEST=$(berth image push ... | tail -n1)`.
            println!("{}", summary.digest);
            Ok(())
        }
    }
}

/// `--dest`, else the image's own name; a digest in it must be the image's.
fn destination(args: &Args, image: &berth_images::Image) -> anyhow::Result<Reference> {
    let name = args.dest.as_deref().unwrap_or(&image.name);
    let destination = Reference::parse(name).with_context(|| {
        format!(
            "{:?} is not a name to push to: give --dest REGISTRY/REPOSITORY[:TAG]",
            name
        )
    })?;
    if let Some(digest) = &destination.digest
        && digest != image.digest()
    {
        bail!(
            "the destination {name} names digest {digest}, but image {} is {}",
            args.reference,
            image.digest()
        );
    }
    Ok(destination)
}
