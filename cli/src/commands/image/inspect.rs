//! `berth image inspect REF`: the manifest and config of one image.

use serde::Serialize;

use crate::Context;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Image name (`busybox:latest`) or manifest digest (or a unique prefix of it).
    reference: String,
}

#[derive(Debug, Serialize)]
struct Inspection<'a> {
    name: &'a str,
    digest: String,
    manifest: &'a oci_spec::image::ImageManifest,
    config: &'a oci_spec::image::ImageConfiguration,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let store = super::open_store(ctx)?;
    let image = store.image(&args.reference)?;
    match ctx.output.unwrap_or(OutputFormat::Json) {
        OutputFormat::Json => print_json(&Inspection {
            name: &image.name,
            digest: image.digest().to_string(),
            manifest: &image.manifest,
            config: &image.config,
        }),
        OutputFormat::Table => {
            println!("Name:         {}", image.name);
            println!("Digest:       {}", image.digest());
            println!(
                "Platform:     {}/{}",
                image.config.os(),
                image.config.architecture()
            );
            if let Some(config) = image.config.config() {
                if let Some(entrypoint) = config.entrypoint() {
                    println!("Entrypoint:   {entrypoint:?}");
                }
                if let Some(cmd) = config.cmd() {
                    println!("Cmd:          {cmd:?}");
                }
                if let Some(env) = config.env() {
                    println!("Env:          {env:?}");
                }
                if let Some(dir) = config.working_dir() {
                    println!("WorkingDir:   {dir}");
                }
            }
            println!("Layers:");
            let diff_ids = image.config.rootfs().diff_ids();
            for (i, layer) in image.manifest.layers().iter().enumerate() {
                println!(
                    "  {}  {:>10}  {}  diff_id {}",
                    layer.digest(),
                    layer.size(),
                    layer.media_type(),
                    diff_ids.get(i).map(String::as_str).unwrap_or("?")
                );
            }
            Ok(())
        }
    }
}
