//! What `image build` and `image import` print about each image they store: its name and the
//! digests of its manifest, config and layers.

use berth_images::Image;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub(crate) struct ImageDigests {
    pub name: String,
    pub digest: String,
    pub config: String,
    pub layers: Vec<String>,
}

impl ImageDigests {
    pub(crate) fn of(image: &Image) -> Self {
        Self {
            name: image.name.clone(),
            digest: image.digest().to_string(),
            config: image.manifest.config().digest().to_string(),
            layers: image
                .manifest
                .layers()
                .iter()
                .map(|l| l.digest().to_string())
                .collect(),
        }
    }
}
