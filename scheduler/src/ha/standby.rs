//! What a standby scheduler serves: DeploymentService calls forwarded to the leader as they
//! are (HTTP/2 requests, streams included), so pipelines may call any scheduler; and a
//! NodeService that turns agents away with the leader's URL (`berth-leader` metadata), so
//! they reconnect to the leader itself.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tower::{Service, ServiceExt as _};

use super::election::Election;
use crate::auth::{Caller, FORWARDED_IDENTITY, Security};
use crate::error::SchedError;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The leader's URL, refused as a forwarding target when it is this scheduler's own (it is
/// becoming the leader: the caller retries in a moment).
async fn leader_of(election: &Election) -> Result<String, SchedError> {
    match election.leader().await {
        Some(url) if url != election.url() => Ok(url),
        Some(_) => Err(SchedError::Unavailable(
            "this scheduler is taking over as the leader; retry".into(),
        )),
        None => Err(SchedError::Unavailable(
            "no scheduler is the leader at the moment; retry".into(),
        )),
    }
}

/// Forwards every call of the service `S` names to the leader.
#[derive(Debug)]
pub struct Forward<S> {
    election: Arc<Election>,
    /// How to dial the leader (TLS with this scheduler's certificate, when on).
    security: Security,
    /// The leader's URL and a channel to it, replaced when the leader changes.
    channel: Arc<Mutex<Option<(String, Channel)>>>,
    _service: PhantomData<fn() -> S>,
}

impl<S> Clone for Forward<S> {
    fn clone(&self) -> Self {
        Self {
            election: self.election.clone(),
            security: self.security.clone(),
            channel: self.channel.clone(),
            _service: PhantomData,
        }
    }
}

impl<S> Forward<S> {
    pub fn new(election: Arc<Election>, security: Security) -> Self {
        Self {
            election,
            security,
            channel: Arc::new(Mutex::new(None)),
            _service: PhantomData,
        }
    }

    fn channel_to(&self, url: &str) -> Result<Channel, SchedError> {
        let mut cached = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, channel)) = cached.as_ref()
            && at == url
        {
            return Ok(channel.clone());
        }
        let channel = self
            .security
            .scheduler_endpoint(url)?
            .connect_timeout(std::time::Duration::from_secs(3))
            .connect_lazy();
        *cached = Some((url.to_string(), channel.clone()));
        Ok(channel)
    }
}

impl<S: NamedService> NamedService for Forward<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: 'static> Service<http::Request<Body>> for Forward<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let path = request.uri().path().to_string();
            // The auth layer checked the caller here and took its credentials off: the leader
            // learns who it is from this header, which it trusts from schedulers only.
            let caller = request
                .extensions()
                .get::<Caller>()
                .map(|c| format!("{};{}", c.name, c.role));
            if let Some(value) = caller.and_then(|c| http::HeaderValue::from_str(&c).ok()) {
                request.headers_mut().insert(FORWARDED_IDENTITY, value);
            }
            let url = match leader_of(&this.election).await {
                Ok(url) => url,
                Err(e) => return Ok(e.into_http()),
            };
            let channel = match this.channel_to(&url) {
                Ok(channel) => channel,
                Err(e) => return Ok(e.into_http()),
            };
            tracing::debug!(%path, leader = %url, "forwarding to the leader");
            match channel.oneshot(request).await {
                Ok(response) => Ok(response),
                Err(e) => Ok(SchedError::Unavailable(format!(
                    "forwarding {path} to the leader at {url}: {e}"
                ))
                .into_http()),
            }
        })
    }
}

/// Answers every call of the service `S` names with Unavailable and the leader's URL.
#[derive(Debug)]
pub struct Redirect<S> {
    election: Arc<Election>,
    _service: PhantomData<fn() -> S>,
}

impl<S> Clone for Redirect<S> {
    fn clone(&self) -> Self {
        Self {
            election: self.election.clone(),
            _service: PhantomData,
        }
    }
}

impl<S> Redirect<S> {
    pub fn new(election: Arc<Election>) -> Self {
        Self {
            election,
            _service: PhantomData,
        }
    }
}

impl<S: NamedService> NamedService for Redirect<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Redirect<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<Body>) -> Self::Future {
        let election = self.election.clone();
        Box::pin(async move {
            Ok(match leader_of(&election).await {
                Ok(url) => berth_proto::leader::redirect(&url).into_http(),
                Err(e) => e.into_http(),
            })
        })
    }
}
