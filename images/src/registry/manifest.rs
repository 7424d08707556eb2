//! Manifest media types: what to ask a registry for, and what an answer turns out to be.

/// OCI image manifest.
pub(super) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub(super) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub(super) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (schema 2's multi-platform index).
pub(super) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Image config media types berth can read (docker's is the same JSON as OCI's).
pub(super) const CONFIG_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The `Accept` header of a manifest request: every kind berth can pull. Schema 1 is left out
/// so that registries which can convert serve schema 2 instead.
pub(super) fn accept_header() -> String {
    [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ]
    .join(", ")
}

/// What a fetched manifest document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ManifestKind {
    /// One image: a config and layers.
    Image,
    /// An index or manifest list of per-platform images.
    Index,
    /// Docker's deprecated schema 1.
    Schema1,
    /// Anything else (artifacts, unknown types).
    Unknown,
}

impl ManifestKind {
    pub(super) fn of(media_type: &str) -> Self {
        match media_type {
            OCI_MANIFEST | DOCKER_MANIFEST => Self::Image,
            OCI_INDEX | DOCKER_MANIFEST_LIST => Self::Index,
            DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Self::Schema1,
            _ => Self::Unknown,
        }
    }
}

/// The media type of a manifest: the Content-Type header, unless it is missing or generic, in
/// which case the document's own `mediaType` field (or its shape, for old OCI documents that
/// omit it) decides.
pub(super) fn media_type_of(content_type: Option<&str>, body: &[u8]) -> String {
    let header = content_type
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|v| !v.is_empty() && v != "application/json" && v != "text/plain");
    if let Some(header) = header {
        return header;
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let Ok(shape) = serde_json::from_slice::<Shape>(body) else {
        return content_type.unwrap_or("").to_string();
    };
    match shape {
        Shape {
            media_type: Some(media_type),
            ..
        } => media_type,
        Shape {
            schema_version: Some(1),
            ..
        } => DOCKER_SCHEMA1.to_string(),
        Shape {
            manifests: Some(_), ..
        } => OCI_INDEX.to_string(),
        Shape {
            config: Some(_), ..
        } => OCI_MANIFEST.to_string(),
        _ => content_type.unwrap_or("").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_decides_when_specific() {
        assert_eq!(
            media_type_of(
                Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
                b"{}"
            ),
            OCI_INDEX
        );
        assert_eq!(
            ManifestKind::of(&media_type_of(Some(DOCKER_MANIFEST), b"")),
            ManifestKind::Image
        );
    }

    #[test]
    fn generic_content_type_falls_back_to_the_document() {
        let schema1 = br#"{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[]}"#;
        assert_eq!(
            ManifestKind::of(&media_type_of(Some("application/json"), schema1)),
            ManifestKind::Schema1
        );
        let old_oci_index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(media_type_of(None, old_oci_index), OCI_INDEX);
        let labelled = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert_eq!(
            ManifestKind::of(&media_type_of(Some("text/plain"), labelled)),
            ManifestKind::Index
        );
    }

    #[test]
    fn artifacts_and_junk_are_unknown() {
        assert_eq!(
            ManifestKind::of("application/vnd.cncf.helm.chart.v1+json"),
            ManifestKind::Unknown
        );
        assert_eq!(
            ManifestKind::of(&media_type_of(None, b"not json")),
            ManifestKind::Unknown
        );
        assert!(accept_header().contains(DOCKER_MANIFEST_LIST));
    }
}
