//! The media types import accepts: OCI's, and Docker schema 2's (structurally the same JSON).

use oci_spec::image::MediaType;

/// Docker schema 2 names for the OCI types; skopeo and docker write these into OCI layouts.
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// What a descriptor points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Index,
    Manifest,
    Config,
    Layer,
}

/// Classifies a media type, or `None` for one berth does not understand.
pub(super) fn classify(media_type: &MediaType) -> Option<Kind> {
    match media_type {
        MediaType::ImageIndex => Some(Kind::Index),
        MediaType::ImageManifest => Some(Kind::Manifest),
        MediaType::ImageConfig => Some(Kind::Config),
        MediaType::ImageLayer
        | MediaType::ImageLayerGzip
        | MediaType::ImageLayerZstd
        | MediaType::ImageLayerNonDistributable
        | MediaType::ImageLayerNonDistributableGzip
        | MediaType::ImageLayerNonDistributableZstd => Some(Kind::Layer),
        MediaType::Other(other) => match other.as_str() {
            DOCKER_MANIFEST_LIST => Some(Kind::Index),
            DOCKER_MANIFEST => Some(Kind::Manifest),
            DOCKER_CONFIG => Some(Kind::Config),
            DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP => Some(Kind::Layer),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_and_oci_types_are_known_and_others_not() {
        assert_eq!(classify(&MediaType::ImageLayerGzip), Some(Kind::Layer));
        assert_eq!(
            classify(&MediaType::from(DOCKER_MANIFEST)),
            Some(Kind::Manifest)
        );
        assert_eq!(classify(&MediaType::from("application/x-weird")), None);
        assert_eq!(classify(&MediaType::ArtifactManifest), None);
    }
}
