//! `berth image ls`: the images in the store.

use serde::Serialize;

use crate::Context;
use crate::output::{human_bytes, print_rows};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    digest: String,
    id: String,
    /// Compressed size of config and layers, as stored.
    size: u64,
    layers: usize,
    created: Option<String>,
    architecture: String,
    os: String,
}

pub(super) fn run(_args: Args, ctx: &Context) -> anyhow::Result<()> {
    let store = super::open_store(ctx)?;
    let mut rows = Vec::new();
    for record in store.list()? {
        let image = store.load_image(record.name, record.descriptor)?;
        let size = image.manifest.config().size()
            + image
                .manifest
                .layers()
                .iter()
                .map(|l| l.size())
                .sum::<u64>();
        rows.push(Row {
            id: image.short_id().to_string(),
            digest: image.digest().to_string(),
            layers: image.manifest.layers().len(),
            created: image.config.created().clone(),
            architecture: image.config.architecture().to_string(),
            os: image.config.os().to_string(),
            name: image.name,
            size,
        });
    }
    print_rows(
        ctx.output(),
        &rows,
        &["NAME", "ID", "LAYERS", "SIZE", "CREATED"],
        |r| {
            vec![
                r.name.clone(),
                r.id.clone(),
                r.layers.to_string(),
                human_bytes(r.size),
                r.created.clone().unwrap_or_default(),
            ]
        },
    )
}
