//! The scheduler's errors, and the one place they become gRPC statuses.

use tonic::Status;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// Holds the qualified name (`environments::key`); says it as callers know it.
    #[error("deployment {} not found", crate::environments::key::describe(.0))]
    NoSuchDeployment(String),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("environment {0:?} does not exist")]
    NoSuchEnvironment(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The object to create exists already.
    #[error("{what} exists already")]
    AlreadyExists { what: String },
    #[error("the state changed while {what}; retry")]
    Conflict { what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("node {node}: {reason}")]
    Node { node: String, reason: String },
    /// No credentials, or ones that do not check out (bad or expired token, bad certificate).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A known caller whose role does not allow the call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A watched deployment was deleted while the watch was open.
    #[error("deployment {} was deleted", crate::environments::key::describe(.0))]
    DeploymentDeleted(String),
    /// The call cannot be served here now (e.g. no leader to forward to); retry.
    #[error("{0}")]
    Unavailable(String),
    /// An event stream's reader fell too far behind the live events (`resume`: the last
    /// revision it was sent).
    #[error(
        "dropped as a slow consumer: {behind} events behind the live stream; resume with \
         --since {resume} (EventsRequest.since_revision {resume}) to miss nothing"
    )]
    SlowConsumer { behind: u64, resume: u64 },
}

impl SchedError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The error as the HTTP response of a gRPC status, for tower services and layers that
    /// answer before (or instead of) a handler.
    pub(crate) fn into_http(self) -> http::Response<tonic::body::Body> {
        Status::from(self).into_http()
    }
}

impl From<SchedError> for Status {
    fn from(e: SchedError) -> Self {
        use berth_proto::errors::ErrorKind as K;
        let kind = match &e {
            SchedError::InvalidArgument { .. }
            | SchedError::Store(StoreError::InvalidKey { .. }) => K::InvalidArgument,
            SchedError::NoSuchDeployment(_)
            | SchedError::NotFound { .. }
            | SchedError::NoSuchEnvironment(_)
            | SchedError::DeploymentDeleted(_) => K::NotFound,
            SchedError::FailedPrecondition(_) => K::FailedPrecondition,
            SchedError::AlreadyExists { .. } => K::AlreadyExists,
            SchedError::Unauthenticated(_) => K::Unauthenticated,
            SchedError::PermissionDenied(_) => K::PermissionDenied,
            SchedError::Conflict { .. } | SchedError::Store(StoreError::Conflict { .. }) => {
                K::Conflict
            }
            SchedError::Store(StoreError::Unavailable(_) | StoreError::NotLeader(_))
            | SchedError::Node { .. }
            | SchedError::Unavailable(_) => K::Unavailable,
            SchedError::Store(_) | SchedError::Corrupt { .. } => K::Internal,
            SchedError::SlowConsumer { .. } => K::ResourceExhausted,
        };
        kind.status(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn codes_follow_the_kind_of_error() {
        let s: Status = SchedError::invalid("spec.image", "empty").into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("spec.image"));
        let s: Status = SchedError::NoSuchDeployment("web".into()).into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("web"));
        let s: Status = SchedError::FailedPrecondition("no rollout awaits approval".into()).into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        let s: Status = SchedError::Store(StoreError::Unavailable("etcd down".into())).into();
        assert_eq!(s.code(), Code::Unavailable);
    }

    /// The kinds the handlers' refactor added keep the codes of the statuses they replace.
    #[test]
    fn deleted_and_unavailable_keep_their_codes_and_messages() {
        let s: Status = SchedError::DeploymentDeleted("web".into()).into();
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "deployment web was deleted");
        let s: Status = SchedError::Unavailable("no leader; retry".into()).into();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "no leader; retry");
        let http = SchedError::Unavailable("no leader; retry".into()).into_http();
        let code = http
            .headers()
            .get("grpc-status")
            .map(|v| v.as_bytes().to_vec());
        assert_eq!(code, Some(b"14".to_vec()), "Unavailable is 14");
    }
}
