//! Registry authentication: answering 401 challenges with basic credentials or a bearer token
//! from the challenge's realm, and remembering per repository what worked for the rest of a pull
//! or push.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use reqwest::{RequestBuilder, StatusCode, Url};
use tokio::sync::Mutex;

use super::challenge::Challenge;
use super::error::{ErrorBody, RegistryError, Target};

/// Token responses larger than this are refused (real ones are a few kilobytes).
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// A user name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    // The password must not end up in logs or panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What to send in `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Authorization {
    Basic,
    Bearer(String),
}

/// Answers challenges for one pull and caches the result per repository.
#[derive(Debug)]
pub(super) struct Authenticator {
    credentials: Option<Credentials>,
    // An async mutex, held while a token is fetched, so that blobs fetched in parallel that all
    // meet a 401 wait for one token instead of each asking for their own.
    cache: Mutex<HashMap<String, Authorization>>,
}

impl Authenticator {
    pub(super) fn new(credentials: Option<Credentials>) -> Self {
        Self {
            credentials,
            cache: Mutex::default(),
        }
    }

    pub(super) async fn cached(&self, repository: &str) -> Option<Authorization> {
        self.cache.lock().await.get(repository).cloned()
    }

    /// Adds the authorization header to a request.
    pub(super) fn apply(
        &self,
        authorization: &Authorization,
        request: RequestBuilder,
    ) -> RequestBuilder {
        match (authorization, &self.credentials) {
            (Authorization::Bearer(token), _) => request.bearer_auth(token),
            (Authorization::Basic, Some(c)) => request.basic_auth(&c.username, Some(&c.password)),
            (Authorization::Basic, None) => request,
        }
    }

    /// Works out a new authorization from a 401's challenges. `rejected` is what the refused
    /// request carried: when another request has meanwhile cached something newer, that is
    /// used instead of asking the token server again.
    pub(super) async fn answer(
        &self,
        http: &reqwest::Client,
        target: &Arc<Target>,
        repository: &str,
        challenges: &[Challenge],
        rejected: Option<&Authorization>,
    ) -> Result<Authorization, RegistryError> {
        let mut cache = self.cache.lock().await;
        if let Some(current) = cache.get(repository)
            && Some(current) != rejected
        {
            return Ok(current.clone());
        }
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => Some((realm, service, scope)),
            _ => None,
        });
        let basic = challenges.iter().find_map(|c| match c {
            Challenge::Basic { realm } => Some(realm),
            _ => None,
        });
        let authorization = if let Some((realm, service, scope)) = bearer {
            // The registry's scope if it gave one, else what the operation needs here.
            let scope = scope.clone().unwrap_or_else(|| {
                format!(
                    "repository:{repository}:{}",
                    target.operation.scope_actions()
                )
            });
            let token = self
                .fetch_token(http, target, realm, service.as_deref(), &scope)
                .await?;
            Authorization::Bearer(token)
        } else if let Some(realm) = basic {
            if self.credentials.is_none() {
                return Err(RegistryError::CredentialsRequired {
                    target: target.clone(),
                    realm: realm.clone(),
                });
            }
            Authorization::Basic
        } else {
            let schemes: Vec<String> = challenges
                .iter()
                .map(|c| match c {
                    Challenge::Other { scheme } => scheme.clone(),
                    other => format!("{other:?}"),
                })
                .collect();
            return Err(RegistryError::UnsupportedAuth {
                target: target.clone(),
                schemes: if schemes.is_empty() {
                    "a 401 without a WWW-Authenticate challenge".to_string()
                } else {
                    schemes.join(", ")
                },
            });
        };
        tracing::debug!(repository, ?authorization, "authenticated");
        cache.insert(repository.to_string(), authorization.clone());
        Ok(authorization)
    }

    /// GETs a token from the realm, with basic credentials when there are any (anonymous
    /// otherwise, which public registries allow for pulls).
    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        target: &Arc<Target>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let fail = |reason: String| RegistryError::Token {
            target: target.clone(),
            realm: realm.to_string(),
            reason,
        };
        let mut url =
            Url::parse(realm).map_err(|e| fail(format!("the realm is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(fail(format!(
                "the realm's scheme {:?} is not http(s)",
                url.scheme()
            )));
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut request = http.get(url);
        if let Some(c) = &self.credentials {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        let mut response = request.send().await.map_err(|e| fail(error_chain(&e)))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(error_chain(&e)))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_TOKEN_RESPONSE {
                return Err(fail(format!(
                    "the answer is larger than {MAX_TOKEN_RESPONSE} bytes"
                )));
            }
        }
        if !status.is_success() {
            let detail = ErrorBody::parse(&body)
                .summary()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            let hint = match (status, &self.credentials) {
                (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, None) => {
                    " (anonymous access refused: credentials are needed)"
                }
                (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, Some(_)) => {
                    " (the credentials were refused)"
                }
                _ => "",
            };
            return Err(fail(format!("HTTP {}{detail}{hint}", status.as_u16())));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("the answer is not token JSON: {e}")))?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("the answer holds neither `token` nor `access_token`".to_string()))
    }
}

/// An error and its causes on one line (reqwest's top-level message hides the interesting part).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
