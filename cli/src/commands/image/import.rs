//! `berth image import PATH`: bring in an OCI image layout, an oci-archive or a docker-archive.

use std::path::PathBuf;

use anyhow::Context as _;
use berth_images::Reference;
use berth_images::import::{ImportOptions, import};
use berth_images::platform::Platform;

use super::summary::ImageDigests;
use crate::Context;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// An OCI image layout directory (with an oci-layout file), an oci-archive tar (`skopeo copy
    /// ... oci-archive:F`) or a docker-archive tar (`docker save`); the format is detected.
    path: PathBuf,
    /// Name the imported image NAME:TAG (only when one image is imported). Needed when the
    /// layout names its image by a bare tag such as "latest", as umoci does.
    #[arg(long)]
    tag: Option<Reference>,
    /// Import only the image the layout names so (its org.opencontainers.image.ref.name, or a
    /// docker-archive RepoTag); by default every named image is imported.
    #[arg(long = "ref", value_name = "NAME_IN_LAYOUT")]
    ref_name: Option<String>,
    /// The platform taken from multi-platform image indexes: os/architecture[/variant].
    #[arg(long, default_value = "linux/amd64")]
    platform: Platform,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let store = super::open_store(ctx)?;
    let options = ImportOptions {
        tag: args.tag,
        ref_name: args.ref_name,
        platform: args.platform,
    };
    let progress = crate::progress::for_terminal();
    let images = import(&store, &args.path, &options, progress.as_ref())
        .with_context(|| format!("importing {}", args.path.display()))?;
    let imported: Vec<ImageDigests> = images.iter().map(ImageDigests::of).collect();
    match ctx.output() {
        OutputFormat::Json => print_json(&imported),
        OutputFormat::Table => {
            for image in &imported {
                println!(
                    "Imported {} {} ({} layers)",
                    image.name,
                    image.digest,
                    image.layers.len()
                );
            }
            Ok(())
        }
    }
}
