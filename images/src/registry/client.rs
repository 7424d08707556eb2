//! HTTP requests to one repository of a registry: authenticated requests of any method, status
//! checks that turn registry errors into `RegistryError`, and verified manifest downloads.

use std::sync::Arc;
use std::time::Duration;

use oci_spec::image::Digest;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::auth::{Authenticator, Credentials};
use super::challenge::parse_challenges;
use super::error::{ErrorBody, Operation, RegistryError, Target};
use super::manifest::{accept_header, media_type_of};
use super::transport::Endpoint;
use crate::digest::{is_sha256, sha256_of};
use crate::reference::Reference;
use crate::store::MAX_JSON_BLOB;

/// Error bodies are read up to this much for their message.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Registries that stop sending for this long are given up on (a stalled pull must end).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Registries redirect blobs to storage (S3, a CDN), sometimes through a hop or two.
const MAX_REDIRECTS: usize = 10;

/// A manifest as the registry sent it, digest verified.
#[derive(Debug, Clone)]
pub(super) struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// The digest a manifest must have, and where that expectation came from (for errors).
#[derive(Debug, Clone, Copy)]
pub(super) struct Expected<'a> {
    pub digest: &'a Digest,
    pub from: &'static str,
}

/// A client for one repository on one registry, for the length of a pull or push.
#[derive(Debug)]
pub(super) struct RegistryClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    target: Arc<Target>,
    auth: Authenticator,
}

impl RegistryClient {
    /// A client for `reference`'s repository, for one pull or push of it.
    pub(super) fn for_reference(
        reference: &Reference,
        operation: Operation,
        plain_http: bool,
        credentials: Option<Credentials>,
    ) -> Result<Self, RegistryError> {
        let endpoint = Endpoint::for_reference(reference, plain_http);
        let target = Arc::new(Target {
            operation,
            registry: endpoint.registry.clone(),
            repository: endpoint.repository.clone(),
            reference: reference.manifest_reference(),
        });
        Self::new(endpoint, target, credentials)
    }

    fn new(
        endpoint: Endpoint,
        target: Arc<Target>,
        credentials: Option<Credentials>,
    ) -> Result<Self, RegistryError> {
        // reqwest is built without a bundled crypto provider (to keep aws-lc's C build out);
        // ring is ours. An error only means a provider was installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .build()
            .map_err(RegistryError::Client)?;
        Ok(Self {
            http,
            endpoint,
            target,
            auth: Authenticator::new(credentials),
        })
    }

    pub(super) fn target(&self) -> &Arc<Target> {
        &self.target
    }

    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// GETs `url`, answering one round of authentication challenges, and returns the response
    /// if it succeeded. `object` names what is fetched in errors.
    pub(super) async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        object: &str,
    ) -> Result<Response, RegistryError> {
        self.send(Method::GET, url, object, |request| match accept {
            Some(accept) => request.header(ACCEPT, accept),
            None => request,
        })
        .await
    }

    /// Sends one request, answering one round of authentication challenges, and returns the
    /// response if it succeeded (2xx). `build` adds headers and body; it is called again for
    /// the retry after a challenge, so a body must be cheap to clone (`Bytes`).
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        object: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let repository = &self.endpoint.repository;
        let mut authorization = self.auth.cached(repository).await;
        let mut challenged = false;
        loop {
            let mut request = build(self.http.request(method.clone(), url));
            if let Some(authorization) = &authorization {
                request = self.auth.apply(authorization, request);
            }
            tracing::debug!(%method, url, object, "request");
            let response = request
                .send()
                .await
                .map_err(|source| RegistryError::Transport {
                    target: self.target.clone(),
                    object: object.to_string(),
                    url: url.to_string(),
                    source,
                })?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenges = challenges_of(response.headers());
                authorization = Some(
                    self.auth
                        .answer(
                            &self.http,
                            &self.target,
                            repository,
                            &challenges,
                            authorization.as_ref(),
                        )
                        .await?,
                );
                continue;
            }
            if status.is_success() {
                return Ok(response);
            }
            return Err(self.status_error(response, object).await);
        }
    }

    /// Turns a failed response into an error carrying the registry's own message.
    async fn status_error(&self, mut response: Response, object: &str) -> RegistryError {
        let status = response.status();
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                // The status is the error; a body cut short only loses its detail.
                Ok(None) | Err(_) => break,
            }
        }
        let parsed = ErrorBody::parse(&body);
        let message = parsed.summary();
        let target = self.target.clone();
        let object = object.to_string();
        match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                target,
                object,
                message,
            },
            _ if parsed.says_unknown() => RegistryError::NotFound {
                target,
                object,
                message,
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
                target,
                object,
                status: status.as_u16(),
                message,
            },
            _ => RegistryError::Status {
                target,
                object,
                status: status.as_u16(),
                message,
            },
        }
    }

    /// Fetches a manifest or index by tag or digest and verifies its digest: against
    /// `expected` when given, else against the registry's `Docker-Content-Digest` header when
    /// it sent one. The digest is always computed here, never taken on trust.
    pub(super) async fn fetch_manifest(
        &self,
        reference: &str,
        expected: Option<Expected<'_>>,
        object: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        if let Some(expected) = expected
            && !is_sha256(expected.digest)
        {
            return Err(RegistryError::UnsupportedDigest {
                target: self.target.clone(),
                object: object.to_string(),
                digest: expected.digest.to_string(),
            });
        }
        let url = self.endpoint.manifest_url(reference);
        let mut response = self.get(&url, Some(&accept_header()), object).await?;
        let too_large = || RegistryError::TooLarge {
            target: self.target.clone(),
            object: object.to_string(),
            limit: MAX_JSON_BLOB,
        };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JSON_BLOB)
        {
            return Err(too_large());
        }
        let content_type = header_str(response.headers(), CONTENT_TYPE.as_str());
        let header_digest = header_str(response.headers(), "docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok())
            .filter(is_sha256);
        let mut bytes = Vec::new();
        while let Some(chunk) =
            response
                .chunk()
                .await
                .map_err(|source| RegistryError::Transport {
                    target: self.target.clone(),
                    object: object.to_string(),
                    url: url.clone(),
                    source,
                })?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > MAX_JSON_BLOB {
                return Err(too_large());
            }
        }
        let actual = sha256_of(&bytes);
        let expectation = expected.or(header_digest.as_ref().map(|digest| Expected {
            digest,
            from: "the registry's Docker-Content-Digest header",
        }));
        if let Some(expected) = expectation
            && expected.digest != &actual
        {
            return Err(RegistryError::DigestMismatch {
                target: self.target.clone(),
                object: object.to_string(),
                expected: expected.digest.to_string(),
                actual: actual.to_string(),
                expected_from: expected.from,
            });
        }
        let media_type = media_type_of(content_type.as_deref(), &bytes);
        tracing::debug!(object, %actual, media_type, "fetched manifest");
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest: actual,
        })
    }

    /// Starts downloading a blob; the caller streams the body.
    pub(super) async fn blob(
        &self,
        digest: &Digest,
        object: &str,
    ) -> Result<(Response, String), RegistryError> {
        let url = self.endpoint.blob_url(digest.as_ref());
        let response = self.get(&url, None, object).await?;
        Ok((response, url))
    }
}

fn challenges_of(headers: &HeaderMap) -> Vec<super::challenge::Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

pub(super) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}
