//! What every page shares: the layout's fields, rendering, the error page (with the HTTP
//! status a gRPC status maps to), and the small formatters of numbers and times.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use berth_proto::v1::{ContainerState, EventKind, RolloutPhase};

use super::Dashboard;
use super::session::Visitor;

/// The layout's fields (base.html): who is signed in, the CSRF token for its forms, and which
/// section of the navigation is current.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub who: String,
    pub role: String,
    pub csrf: String,
    /// Action buttons are shown only to those allowed to use them (the server checks anyway).
    pub can_write: bool,
    pub signed_in: bool,
    pub section: &'static str,
    /// The server-sent events the page listens to ("" for none).
    pub live: String,
}

impl Layout {
    pub(crate) fn new(d: &Dashboard, v: &Visitor, section: &'static str) -> Self {
        Self {
            who: v.name().to_string(),
            role: v.role().as_str().to_string(),
            csrf: v.csrf(d),
            can_write: v.can_write(),
            signed_in: v.signed_in(),
            section,
            live: "/live".to_string(),
        }
    }
}

/// A request that failed: its status and a message for people.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A form axum could not take: too large (413), or not the fields expected (400).
    pub(crate) fn from_form(rejection: axum::extract::rejection::FormRejection) -> Self {
        let status = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(
            status,
            format!("the form was refused: {}", rejection.body_text()),
        )
    }
}

impl From<tonic::Status> for PageError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let http = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(http, status.message())
    }
}

impl From<crate::error::SchedError> for PageError {
    fn from(e: crate::error::SchedError) -> Self {
        tonic::Status::from(e).into()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("error"),
            message: &self.message,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(_) => (self.status, self.message).into_response(),
        }
    }
}

pub(crate) fn render(page: &impl Template) -> Result<Html<String>, PageError> {
    page.render().map(Html).map_err(|e| {
        tracing::error!("dashboard template: {e}");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page failed to render",
        )
    })
}

/// "awaiting-approval" and the like, as the CLI prints phases.
pub(crate) fn phase(value: i32) -> &'static str {
    match RolloutPhase::try_from(value).unwrap_or(RolloutPhase::Unspecified) {
        RolloutPhase::Unspecified => "-",
        RolloutPhase::Progressing => "progressing",
        RolloutPhase::AwaitingApproval => "awaiting-approval",
        RolloutPhase::Complete => "complete",
        RolloutPhase::Failed => "failed",
        RolloutPhase::RolledBack => "rolled-back",
        RolloutPhase::Rejected => "rejected",
    }
}

pub(crate) fn state(value: i32) -> &'static str {
    match ContainerState::try_from(value).unwrap_or(ContainerState::Unspecified) {
        ContainerState::Unspecified => "-",
        ContainerState::Pending => "pending",
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Failed => "failed",
        ContainerState::Stopping => "stopping",
    }
}

/// "container", "rollout", "approval" and the like: what an event of the log is about.
pub(crate) fn event_kind(value: i32) -> &'static str {
    match EventKind::try_from(value).unwrap_or(EventKind::Unspecified) {
        EventKind::Unspecified => "-",
        EventKind::NodeReady => "node ready",
        EventKind::NodeNotReady => "node not ready",
        EventKind::Container => "container",
        EventKind::Rollout => "rollout",
        EventKind::Approval => "approval",
        EventKind::Promotion => "promotion",
        EventKind::Audit => "audit",
    }
}

/// How long ago `at_ms` was, seen at `now_ms`: "4 s ago", "3 min ago", "2 h ago", "5 d ago".
pub(crate) fn ago(at_ms: i64, now_ms: i64) -> String {
    if at_ms <= 0 {
        return "never".to_string();
    }
    let s = (now_ms - at_ms).max(0) / 1000;
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

/// Binary units, one decimal: "512.0 MiB".
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut scaled = n;
    while scaled >= 1024 * 1024 && unit < UNITS.len() - 2 {
        scaled /= 1024;
        unit += 1;
    }
    if scaled >= 1024 {
        // Tenths of the next unit, in integers: exact enough for a label.
        let tenths = scaled * 10 / 1024;
        return format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit + 1]);
    }
    format!("{scaled} {}", UNITS[unit])
}

/// `part` of `whole` in whole percent, 0 when there is no whole.
pub(crate) fn percent(part: u64, whole: u64) -> u64 {
    part.saturating_mul(100)
        .checked_div(whole)
        .map_or(0, |p| p.min(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatters() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(32 << 20), "32.0 MiB");
        assert_eq!(bytes(1536 << 20), "1.5 GiB");
        assert_eq!(ago(0, 10), "never");
        assert_eq!(ago(1_000, 5_500), "4 s ago");
        assert_eq!(ago(1, 7_200_001), "2 h ago");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(5, 0), 0);
        assert_eq!(
            phase(RolloutPhase::AwaitingApproval as i32),
            "awaiting-approval"
        );
    }
}
