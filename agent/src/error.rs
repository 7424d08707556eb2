//! The agent's errors, and the one place they become gRPC statuses.

use tonic::{Code, Status};

/// What can go wrong serving a request or running an assignment.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no container {0} on this node")]
    NoSuchContainer(String),
    #[error("container {id} is not running ({state})")]
    NotRunning { id: String, state: String },
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("image {reference}: {reason}")]
    Image { reference: String, reason: String },
    #[error("container {id}: {reason}")]
    Container { id: String, reason: String },
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error(transparent)]
    Shim(#[from] crate::shim::ShimError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Explain(#[from] berth_runtime::explain::ExplainError),
    #[error("the node network is not ready: the scheduler has not assigned a pod CIDR yet")]
    NetworkNotReady,
}

impl AgentError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// A short machine-readable cause for container statuses (as kubelet's reasons).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Image { .. } => "ImagePullBackOff",
            Self::Net(crate::net::NetError::PortInUse { .. }) => "PortInUse",
            Self::Net(crate::net::NetError::NoAddressLeft { .. }) => "NoAddressLeft",
            Self::Net(_) | Self::NetworkNotReady => "NetworkError",
            Self::InvalidArgument { .. } => "InvalidSpec",
            _ => "StartError",
        }
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Self {
        let code = match &e {
            AgentError::NoSuchContainer(_) => Code::NotFound,
            AgentError::NotRunning { .. }
            | AgentError::Explain(berth_runtime::explain::ExplainError::Gone { .. }) => {
                Code::FailedPrecondition
            }
            AgentError::InvalidArgument { .. } => Code::InvalidArgument,
            AgentError::NetworkNotReady => Code::Unavailable,
            AgentError::Image { .. }
            | AgentError::Container { .. }
            | AgentError::Net(_)
            | AgentError::Shim(_)
            | AgentError::Explain(_)
            | AgentError::Io { .. } => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_the_code_and_name_the_object() {
        let s: Status = AgentError::NoSuchContainer("web-1".into()).into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("web-1"));
        let s: Status = AgentError::NotRunning {
            id: "db".into(),
            state: "exited".into(),
        }
        .into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        let s: Status = AgentError::InvalidArgument {
            field: "command",
            reason: "empty".into(),
        }
        .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("command"));
        let s: Status = AgentError::NetworkNotReady.into();
        assert_eq!(s.code(), Code::Unavailable);
    }
}
