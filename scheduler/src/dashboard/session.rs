//! Who is visiting and whether a request may go on: the token cookie (checked against the
//! store like a bearer token) or, without TLS, loopback trust as on gRPC; CSRF tokens bound
//! to the session; the guard in front of every route (Host and Origin headers, security
//! headers); signing in and out.

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, HOST, ORIGIN, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use berth_proto::tls::{CertSource, Identity, Role};
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::Dashboard;
use super::https::Peer;
use super::view::{Layout, PageError, render};
use crate::auth::{Access, Caller, Via};

/// The cookie that holds a signed-in visitor's token (HttpOnly: page scripts never see it).
const TOKEN_COOKIE: &str = "berth_token";

/// What the login form's CSRF token is bound to, before there is a session.
const LOGIN_SESSION: &str = "login";

/// The visitor of a request.
#[derive(Debug, Clone)]
pub(crate) struct Visitor {
    /// The token's caller; None for a loopback visitor without one (TLS off).
    caller: Option<Caller>,
    role: Role,
    /// What this visitor's CSRF tokens are bound to: its token, or "local".
    session: String,
}

impl Visitor {
    pub(crate) fn name(&self) -> &str {
        self.caller.as_ref().map_or("local", |c| c.name.as_str())
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// Signed in with a token, which signing out forgets (a certificate stays the browser's).
    pub(crate) fn signed_in(&self) -> bool {
        self.caller
            .as_ref()
            .is_some_and(|c| matches!(c.via, Via::Token { .. }))
    }

    /// Whether the gRPC API would let this visitor change deployments.
    pub(crate) fn can_write(&self) -> bool {
        Access::Write.allows(self.role)
    }

    pub(crate) fn csrf(&self, d: &Dashboard) -> String {
        csrf_for(d, &self.session)
    }

    /// Refuses a form whose CSRF token is missing or not this session's.
    pub(crate) fn check_csrf(&self, d: &Dashboard, given: Option<&str>) -> Result<(), PageError> {
        check_csrf_for(d, &self.session, given)
    }

    /// A gRPC request carrying this visitor as its caller, as the auth layer would set it:
    /// the handlers audit it under the same name.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(caller) = &self.caller {
            request.extensions_mut().insert(caller.clone());
        }
        request
    }
}

impl FromRequestParts<Dashboard> for Visitor {
    type Rejection = Response;

    /// A token cookie first (as a bearer token comes before the certificate on gRPC), then
    /// a verified client certificate, then loopback trust when TLS is off.
    async fn from_request_parts(parts: &mut Parts, d: &Dashboard) -> Result<Self, Response> {
        let cert = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .and_then(|info| info.0.cert.clone());
        match (cookie(&parts.headers, TOKEN_COOKIE), cert) {
            (Some(token), _) => match d.tokens.verify(&token).await {
                Ok(caller) => Ok(Visitor {
                    role: caller.role,
                    caller: Some(caller),
                    session: token,
                }),
                Err(e) => {
                    // The reason names the token's id at most, never its secret.
                    tracing::warn!(path = %parts.uri.path(), reason = %e, "dashboard: token refused");
                    Err((clear_cookie(d), Redirect::to("/login")).into_response())
                }
            },
            (None, Some(der)) => certificate_visitor(&der).map_err(IntoResponse::into_response),
            (None, None) if d.require_login => Err(Redirect::to("/login").into_response()),
            (None, None) => Ok(Visitor {
                caller: None,
                role: Role::Admin,
                session: "local".to_string(),
            }),
        }
    }
}

/// The visitor a client certificate names, as the gRPC auth layer reads it: the CN and the
/// role in `O=berth:<role>`. Its CSRF tokens are bound to the certificate itself.
fn certificate_visitor(der: &[u8]) -> Result<Visitor, PageError> {
    let identity = Identity::from_der(der, CertSource::Peer).map_err(|e| {
        // Chained to the cluster CA, yet no berth identity: nobody we know.
        PageError::new(StatusCode::FORBIDDEN, e.to_string())
    })?;
    if !Access::Read.allows(identity.role) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the certificate of {:?} is a {}'s: the dashboard is for viewers, deployers \
                 and admins",
                identity.common_name, identity.role
            ),
        ));
    }
    Ok(Visitor {
        role: identity.role,
        caller: Some(Caller {
            name: identity.common_name,
            role: identity.role,
            via: Via::Certificate,
        }),
        session: format!("cert:{}", hex::encode(Sha256::digest(der))),
    })
}

fn csrf_for(d: &Dashboard, session: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(d.csrf_key.as_slice()).expect("any key length");
    mac.update(session.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn check_csrf_for(d: &Dashboard, session: &str, given: Option<&str>) -> Result<(), PageError> {
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "the form has no CSRF token (field `csrf`): reload the page and try again",
        ));
    };
    let expected = csrf_for(d, session);
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is not this session's: reload the page and try again",
        ));
    }
    Ok(())
}

/// The value of cookie `name`, if the request has it.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// The attributes of the token cookie: only ever sent back over HTTPS when the dashboard
/// serves it.
fn cookie_attributes(d: &Dashboard) -> &'static str {
    if d.https.is_some() {
        "HttpOnly; SameSite=Strict; Path=/; Secure"
    } else {
        "HttpOnly; SameSite=Strict; Path=/"
    }
}

fn clear_cookie(d: &Dashboard) -> [(axum::http::HeaderName, HeaderValue); 1] {
    let cookie = format!("{TOKEN_COOKIE}=; {}; Max-Age=0", cookie_attributes(d));
    [(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a valid header value"),
    )]
}

/// In front of every route: over plain HTTP, a Host header that is not a loopback name is
/// refused (a page on another site could otherwise reach this one through DNS rebinding; over
/// HTTPS the browser refuses a name the certificate does not hold), so is a POST from
/// another origin; every answer gets headers that keep it out of frames and caches.
pub(crate) async fn guard(State(d): State<Dashboard>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let scheme = if d.https.is_some() { "https" } else { "http" };
    if d.https.is_none() && !is_loopback_host(&host) {
        return PageError::new(
            StatusCode::BAD_REQUEST,
            format!("Host {host:?} is not a loopback address: the dashboard serves loopback only"),
        )
        .into_response();
    }
    if req.method() == Method::POST
        && let Some(origin) = req.headers().get(ORIGIN)
        && origin.as_bytes() != format!("{scheme}://{host}").as_bytes()
    {
        return PageError::new(
            StatusCode::FORBIDDEN,
            format!("a form posted from another origin ({origin:?}) is refused"),
        )
        .into_response();
    }
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
        (X_FRAME_OPTIONS, "DENY"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not no-referrer: under it browsers send `Origin: null` on forms, which the check above refuses.
        (REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// `localhost`, `127.0.0.1`, `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    error: String,
}

pub(crate) async fn login_page(State(d): State<Dashboard>) -> Result<Response, PageError> {
    login_form(&d, String::new(), StatusCode::OK)
}

fn login_form(d: &Dashboard, error: String, status: StatusCode) -> Result<Response, PageError> {
    let layout = Layout {
        who: String::new(),
        role: String::new(),
        csrf: csrf_for(d, LOGIN_SESSION),
        can_write: false,
        signed_in: false,
        section: "login",
        live: String::new(),
    };
    Ok((status, render(&LoginPage { layout, error })?).into_response())
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    csrf: Option<String>,
}

/// Checks the pasted token once and keeps it in an HttpOnly cookie.
pub(crate) async fn login(
    State(d): State<Dashboard>,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    let form = form.map_err(PageError::from_form)?;
    check_csrf_for(&d, LOGIN_SESSION, form.csrf.as_deref())?;
    let token = form.token.trim();
    match d.tokens.verify(token).await {
        Ok(caller) => {
            tracing::info!(caller = %caller, "dashboard: signed in");
            let cookie = format!("{TOKEN_COOKIE}={token}; {}", cookie_attributes(&d));
            let cookie = HeaderValue::from_str(&cookie).map_err(|_| {
                PageError::new(
                    StatusCode::BAD_REQUEST,
                    "the token has characters no cookie may hold",
                )
            })?;
            Ok(([(SET_COOKIE, cookie)], Redirect::to("/")).into_response())
        }
        Err(e) => login_form(
            &d,
            format!("the token was not accepted: {e}"),
            StatusCode::UNAUTHORIZED,
        ),
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct LogoutForm {
    csrf: Option<String>,
}

pub(crate) async fn logout(
    State(d): State<Dashboard>,
    visitor: Visitor,
    form: Result<axum::Form<LogoutForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    let form = form.map_err(PageError::from_form)?;
    visitor.check_csrf(&d, form.csrf.as_deref())?;
    Ok((clear_cookie(&d), Redirect::to("/login")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        for ok in [
            "localhost",
            "localhost:7780",
            "127.0.0.1:7780",
            "[::1]:7780",
            "127.0.0.2",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example:7780",
            "10.0.0.1:7780",
            "[fe80::1]:80",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; berth_token=berth_x_y; b=2"),
        );
        assert_eq!(cookie(&headers, TOKEN_COOKIE).as_deref(), Some("berth_x_y"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
