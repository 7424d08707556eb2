//! Pinning images by digest on Apply (as Swarm does): a spec that pulls from a registry names
//! its image by tag; the scheduler asks the registry which manifest that tag names now and
//! stores `repo@sha256:...`, so every replica, and every later promotion, runs the same bytes
//! even when the tag moves. Node-local images (present, import) are kept as given.

use berth_images::Reference;
use berth_images::registry::{Credentials, PullOptions, resolve_digest};
use berth_proto::v1::DeploymentSpec;
use berth_proto::v1::image_source::Fetch;

use crate::error::SchedError;

/// `spec` with its registry image by digest (unchanged when it is node-local or already by
/// digest). Fails naming the image when the registry cannot resolve it.
pub(crate) async fn pin(mut spec: DeploymentSpec) -> Result<DeploymentSpec, SchedError> {
    let Some(Fetch::Pull(pull)) = spec.image_source.as_ref().and_then(|s| s.fetch.clone()) else {
        return Ok(spec);
    };
    let reference = Reference::parse(&spec.image)
        .map_err(|e| SchedError::invalid("spec.image", e.to_string()))?;
    if reference.digest.is_some() {
        return Ok(spec);
    }
    let options = PullOptions {
        plain_http: pull.plain_http,
        credentials: (!pull.username.is_empty()).then(|| Credentials {
            username: pull.username.clone(),
            password: pull.password.clone(),
        }),
        ..Default::default()
    };
    let digest = resolve_digest(&reference, &options).await.map_err(|e| {
        SchedError::FailedPrecondition(format!(
            "spec.image {}: cannot resolve its digest in the registry: {e}",
            spec.image
        ))
    })?;
    let pinned = format!("{}@{digest}", reference.name());
    tracing::info!(image = %spec.image, %pinned, "image pinned by digest");
    spec.image = pinned.clone();
    if let Some(source) = spec.image_source.as_mut() {
        source.reference = pinned;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::{ImageSource, RegistryPull};

    fn spec(image: &str, fetch: Fetch) -> DeploymentSpec {
        DeploymentSpec {
            name: "web".into(),
            image: image.into(),
            image_source: Some(ImageSource {
                reference: image.into(),
                fetch: Some(fetch),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn node_local_and_by_digest_images_are_kept() {
        let present = spec("web:1", Fetch::Present(true));
        assert_eq!(pin(present.clone()).await.unwrap(), present);
        let by_digest = spec(
            "127.0.0.1:1/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            Fetch::Pull(RegistryPull::default()),
        );
        assert_eq!(pin(by_digest.clone()).await.unwrap(), by_digest);
    }

    #[tokio::test]
    async fn an_unreachable_registry_fails_naming_the_image() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let s = spec("127.0.0.1:1/web:1", Fetch::Pull(RegistryPull::default()));
        let err = pin(s).await.unwrap_err().to_string();
        assert!(err.contains("127.0.0.1:1/web:1"), "{err}");
    }
}
