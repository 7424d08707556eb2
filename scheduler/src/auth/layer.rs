//! The tower layer in front of every service: works out the caller of each request (peer
//! certificate, bearer token or forwarded identity), checks its role against the method's
//! [`Access`], and either passes the request on with the [`Caller`] in its extensions or
//! answers Unauthenticated / PermissionDenied itself, logged, without calling the handler.
//! A layer rather than an interceptor because a token check awaits the store.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use berth_proto::tls::{self, Role};
use http::header::AUTHORIZATION;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower_layer::Layer;
use tower_service::Service;

use super::{Access, Caller, FORWARDED_IDENTITY, Tokens, Via};
use crate::error::SchedError;

/// Checks every request when built with [`AuthLayer::new`]; lets everything through (TLS off,
/// loopback trust) when built with [`AuthLayer::disabled`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    tokens: Option<Arc<Tokens>>,
}

impl AuthLayer {
    pub fn new(tokens: Tokens) -> Self {
        Self {
            tokens: Some(Arc::new(tokens)),
        }
    }

    pub fn disabled() -> Self {
        Self { tokens: None }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the scheduler's routes.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(tokens) = self.tokens.clone() else {
            return Box::pin(self.inner.call(req));
        };
        // The service polled ready is `self.inner`: take it, leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let path = req.uri().path().to_string();
            match admit(&tokens, &mut req).await {
                Ok(caller) => {
                    if let Some(caller) = caller {
                        tracing::debug!(method = %path, caller = %caller, "admitted");
                        req.extensions_mut().insert(caller);
                    }
                    inner.call(req).await
                }
                Err((who, error)) => {
                    // Store trouble is not a refusal, but the handler is skipped all the same.
                    let refusal = match &error {
                        SchedError::Unauthenticated(_) => Some("Unauthenticated"),
                        SchedError::PermissionDenied(_) => Some("PermissionDenied"),
                        _ => None,
                    };
                    if let Some(code) = refusal {
                        tracing::warn!(
                            method = %path,
                            caller = %who,
                            peer = %peer_addr(req.extensions()),
                            code,
                            reason = %error,
                            "refused"
                        );
                    } else {
                        tracing::error!(method = %path, caller = %who, "checking credentials: {error}");
                    }
                    Ok(error.into_http())
                }
            }
        })
    }
}

/// The caller of `req` if the method allows it (`None` for open methods), or who it seemed to
/// be and why not. Strips the credentials headers, so nothing after this layer sees a token
/// or an unchecked forwarded identity.
async fn admit<B>(
    tokens: &Tokens,
    req: &mut http::Request<B>,
) -> Result<Option<Caller>, (String, SchedError)> {
    let path = req.uri().path().to_string();
    let forwarded = req.headers_mut().remove(FORWARDED_IDENTITY);
    let authorization = req.headers_mut().remove(AUTHORIZATION);
    let access = Access::of_path(&path);
    if access == Some(Access::Open) {
        return Ok(None);
    }
    let anonymous = || "anonymous".to_string();
    let peer = match tls::peer_identity_from_extensions(req.extensions()) {
        None => None,
        Some(Ok(identity)) => Some(identity),
        // Chained to our CA, yet no berth identity: nobody we know.
        Some(Err(e)) => return Err((anonymous(), SchedError::Unauthenticated(e.to_string()))),
    };
    let caller = if let Some(header) = forwarded
        .as_ref()
        .filter(|_| peer.as_ref().is_some_and(|p| p.role == Role::Scheduler))
    {
        let by = peer
            .as_ref()
            .map(|p| p.common_name.clone())
            .unwrap_or_default();
        forwarded_caller(header, by.clone()).map_err(|e| (format!("scheduler {by:?}"), e))?
    } else if let Some(value) = authorization {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                (
                    anonymous(),
                    SchedError::Unauthenticated(
                        "the authorization header is not `Bearer <token>`".to_string(),
                    ),
                )
            })?;
        tokens.verify(token).await.map_err(|e| (anonymous(), e))?
    } else if let Some(identity) = peer {
        Caller {
            name: identity.common_name,
            role: identity.role,
            via: Via::Certificate,
        }
    } else {
        return Err((
            anonymous(),
            SchedError::Unauthenticated(
                "no credentials: present a client certificate or a bearer token \
                 (--tls-cert/--tls-key or --token)"
                    .to_string(),
            ),
        ));
    };
    let Some(access) = access else {
        return Err((
            caller.to_string(),
            SchedError::PermissionDenied(format!("no access rule lets anyone call {path}")),
        ));
    };
    if !access.allows(caller.role) {
        let roles: Vec<&str> = access.roles().iter().map(|r| r.as_str()).collect();
        return Err((
            caller.to_string(),
            SchedError::PermissionDenied(format!(
                "{caller} may not call {path}: it needs the {} role",
                roles.join(" or ")
            )),
        ));
    }
    Ok(Some(caller))
}

/// `<name>;<role>` from a trusted scheduler.
fn forwarded_caller(header: &http::HeaderValue, by: String) -> Result<Caller, SchedError> {
    let bad = || {
        SchedError::Unauthenticated(format!(
            "malformed {FORWARDED_IDENTITY} header (expected <name>;<role>)"
        ))
    };
    let (name, role) = header
        .to_str()
        .map_err(|_| bad())?
        .rsplit_once(';')
        .ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok(Caller {
        name: name.to_string(),
        role: role.parse().map_err(|_| bad())?,
        via: Via::Forwarded { by },
    })
}

fn peer_addr(extensions: &http::Extensions) -> String {
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.get_ref().remote_addr())
        .or_else(|| {
            extensions
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
        })
        .map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_identities_parse_strictly() {
        let ok =
            forwarded_caller(&http::HeaderValue::from_static("alice;viewer"), "s1".into()).unwrap();
        assert_eq!(ok.name, "alice");
        assert_eq!(ok.role, Role::Viewer);
        assert_eq!(ok.via, Via::Forwarded { by: "s1".into() });
        for bad in ["alice", ";viewer", "alice;root", "alice;"] {
            let header = http::HeaderValue::from_str(bad).unwrap();
            assert!(forwarded_caller(&header, "s1".into()).is_err(), "{bad}");
        }
    }
}
