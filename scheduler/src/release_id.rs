//! A release's id: a digest of what a rollout runs, apart from what belongs to an environment,
//! so that the same release has the same id in staging and in production.

use berth_proto::v1::DeploymentSpec;
use prost::Message;
use sha2::{Digest, Sha256};

/// The spec a release records: the plain name (a stored spec's name is qualified with its
/// environment: `hello.staging`), `environment`, `replicas` and `node_selector` cleared (scale
/// and placement are the environment's), everything else (image by digest, pinned config and
/// secret versions) kept.
pub(crate) fn release_spec(spec: &DeploymentSpec) -> DeploymentSpec {
    let env = spec.environment.as_str();
    let name = match env {
        "" | "default" => spec.name.as_str(),
        env => spec
            .name
            .strip_suffix(env)
            .and_then(|n| n.strip_suffix('.'))
            .unwrap_or(&spec.name),
    };
    DeploymentSpec {
        name: name.to_owned(),
        environment: String::new(),
        replicas: 0,
        node_selector: Default::default(),
        ..spec.clone()
    }
}

/// "r-" and the first 16 hex digits of the sha256 of the release spec's encoding. Maps are
/// BTreeMaps (proto/build.rs), so the encoding, and the id, are the same every time.
pub(crate) fn release_id(spec: &DeploymentSpec) -> String {
    let digest = Sha256::digest(release_spec(spec).encode_to_vec());
    format!("r-{}", &hex::encode(digest)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DeploymentSpec {
        DeploymentSpec {
            name: "hello.staging".into(),
            image: "localhost:5000/hello@sha256:ab".into(),
            replicas: 2,
            environment: "staging".into(),
            env: [("A".to_string(), "1".to_string()), ("B".into(), "2".into())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn environment_replicas_and_selector_do_not_change_the_id() {
        let mut production = spec();
        production.name = "hello.production".into();
        production.environment = "production".into();
        production.replicas = 5;
        production.node_selector = [("tier".to_string(), "prod".to_string())].into();
        assert_eq!(release_id(&spec()), release_id(&production));
        let mut default = spec();
        default.name = "hello".into();
        default.environment = String::new();
        assert_eq!(release_id(&spec()), release_id(&default));
        assert_eq!(release_spec(&spec()).name, "hello");
        assert!(release_id(&spec()).starts_with("r-"));
        assert_eq!(release_id(&spec()).len(), 18);
    }

    #[test]
    fn image_env_and_versions_change_the_id() {
        let mut other = spec();
        other.image = "localhost:5000/hello@sha256:cd".into();
        assert_ne!(release_id(&spec()), release_id(&other));
        let mut other = spec();
        other.env.insert("A".into(), "2".into());
        assert_ne!(release_id(&spec()), release_id(&other));
    }
}
