//! Where a reference's registry API lives: host, scheme and repository path, as docker maps them,
//! and the URLs of its manifests, blobs and blob uploads.

use crate::reference::Reference;

/// What a reference without a registry means, and what docker calls Docker Hub.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Docker Hub's API is not served at its name.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// The registry API a reference is pulled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The registry as named in the reference (`docker.io` when none was).
    pub registry: String,
    /// `http://host[:port]` or `https://host[:port]`.
    pub base_url: String,
    /// The repository path on that registry (Docker Hub puts official images under `library/`).
    pub repository: String,
}

impl Endpoint {
    /// Plain HTTP for loopback registries (as docker allows) or when asked; HTTPS otherwise.
    pub fn for_reference(reference: &Reference, plain_http: bool) -> Self {
        let registry = reference
            .registry
            .clone()
            .unwrap_or_else(|| DEFAULT_REGISTRY.to_string());
        let docker_hub = matches!(registry.as_str(), "docker.io" | "index.docker.io");
        let host = if docker_hub {
            DOCKER_HUB_API_HOST
        } else {
            registry.as_str()
        };
        let repository = if docker_hub && !reference.repository.contains('/') {
            format!("library/{}", reference.repository)
        } else {
            reference.repository.clone()
        };
        let scheme = if plain_http || is_loopback(&registry) {
            "http"
        } else {
            "https"
        };
        Self {
            base_url: format!("{scheme}://{host}"),
            registry,
            repository,
        }
    }

    pub fn manifest_url(&self, reference: &str) -> String {
        format!(
            "{}/v2/{}/manifests/{reference}",
            self.base_url, self.repository
        )
    }

    pub fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base_url, self.repository)
    }

    /// Where blob uploads start (POST), optionally as a mount of `digest` from `from`.
    pub fn upload_url(&self, mount: Option<(&str, &str)>) -> String {
        let url = format!("{}/v2/{}/blobs/uploads/", self.base_url, self.repository);
        match mount {
            Some((digest, from)) => format!("{url}?mount={digest}&from={from}"),
            None => url,
        }
    }

    /// An upload session's `Location` header as an absolute URL: registries may send a path
    /// only, and the URL carries their session state in its query, which must be kept.
    pub fn resolve_location(&self, location: &str) -> Result<reqwest::Url, String> {
        reqwest::Url::parse(&self.base_url)
            .and_then(|base| base.join(location))
            .map_err(|e| format!("the upload Location {location:?} is not a URL: {e}"))
    }
}

/// True for `localhost`, `127.x.x.x` and `::1`, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(reference: &str, plain_http: bool) -> Endpoint {
        Endpoint::for_reference(&Reference::parse(reference).unwrap(), plain_http)
    }

    #[test]
    fn loopback_registries_get_plain_http() {
        for r in [
            "localhost:5000/a",
            "127.0.0.1:5000/a",
            "127.1.2.3/a:x",
            "[::1]:5000/a",
            "localhost/a",
        ] {
            assert!(endpoint(r, false).base_url.starts_with("http://"), "{r}");
        }
        assert_eq!(
            endpoint("127.0.0.1:5000/a", false).base_url,
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            endpoint("[::1]:5000/a", false).base_url,
            "http://[::1]:5000"
        );
    }

    #[test]
    fn other_registries_get_https_unless_told() {
        assert_eq!(
            endpoint("quay.io/team/app", false).base_url,
            "https://quay.io"
        );
        assert_eq!(
            endpoint("10.0.0.5:5000/app", false).base_url,
            "https://10.0.0.5:5000"
        );
        assert_eq!(
            endpoint("10.0.0.5:5000/app", true).base_url,
            "http://10.0.0.5:5000"
        );
    }

    #[test]
    fn docker_hub_names_map_to_its_api_host_and_library() {
        let e = endpoint("busybox", false);
        assert_eq!(e.registry, "docker.io");
        assert_eq!(
            e.manifest_url("latest"),
            "https://registry-1.docker.io/v2/library/busybox/manifests/latest"
        );
        let e = endpoint("docker.io/team/app:1", false);
        assert_eq!(e.repository, "team/app");
        let e = endpoint("127.0.0.1:5000/team/app", false);
        assert_eq!(
            e.blob_url("sha256:ab"),
            "http://127.0.0.1:5000/v2/team/app/blobs/sha256:ab"
        );
    }

    #[test]
    fn upload_locations_resolve_against_the_registry() {
        let e = endpoint("127.0.0.1:5000/team/app", false);
        assert_eq!(
            e.upload_url(Some(("sha256:ab", "team/base"))),
            "http://127.0.0.1:5000/v2/team/app/blobs/uploads/?mount=sha256:ab&from=team/base"
        );
        let relative = e
            .resolve_location("/v2/team/app/blobs/uploads/u1?_state=x%3D")
            .unwrap();
        assert_eq!(
            relative.as_str(),
            "http://127.0.0.1:5000/v2/team/app/blobs/uploads/u1?_state=x%3D"
        );
        let absolute = e.resolve_location("https://store.example/up/u2").unwrap();
        assert_eq!(absolute.as_str(), "https://store.example/up/u2");
    }
}
