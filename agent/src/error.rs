//! The agent's errors, their kinds, and the one place they become gRPC statuses.

use berth_images::registry::RegistryError;
use berth_images::{StoreError, import::ImportError};
use berth_proto::errors::ErrorKind;
use tonic::Status;

/// What can go wrong serving a request or running an assignment.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no container {0} on this node")]
    NoSuchContainer(String),
    #[error("container {id} is not running ({state})")]
    NotRunning { id: String, state: String },
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("image {reference}: not in the node's image store")]
    ImageNotPresent { reference: String },
    #[error("image {reference}: pull failed: {source}")]
    Pull {
        reference: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("image {reference}: {source}")]
    ImageStore {
        reference: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("image {reference}: import of {path} failed: {source}")]
    Import {
        reference: String,
        path: String,
        #[source]
        source: Box<ImportError>,
    },
    #[error("opening the image store: {0}")]
    OpenStore(#[source] Box<StoreError>),
    #[error("container {id}: {reason}")]
    Container { id: String, reason: String },
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error(transparent)]
    Shim(#[from] crate::shim::ShimError),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
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
    /// A caller without a (valid) client certificate.
    #[error("{0}")]
    Unauthenticated(String),
    /// A caller whose certificate's role may not call AgentService.
    #[error("{0}")]
    PermissionDenied(String),
    /// A fault of the agent itself (a task that died, an encoding that failed).
    #[error("{what}: {reason}")]
    Internal { what: String, reason: String },
}

impl AgentError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// A short machine-readable cause for container statuses (as kubelet's reasons).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ImageNotPresent { .. }
            | Self::Pull { .. }
            | Self::ImageStore { .. }
            | Self::Import { .. }
            | Self::OpenStore(_) => "ImagePullBackOff",
            Self::Net(crate::net::NetError::PortInUse { .. }) => "PortInUse",
            Self::Net(crate::net::NetError::NoAddressLeft { .. }) => "NoAddressLeft",
            Self::Net(_) | Self::NetworkNotReady => "NetworkError",
            Self::InvalidArgument { .. } => "InvalidSpec",
            _ => "StartError",
        }
    }
}

impl AgentError {
    /// An [`AgentError::Internal`] naming what failed, for `map_err`.
    pub fn internal<E: std::fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> Self {
        let what = what.into();
        move |e| Self::Internal {
            what,
            reason: e.to_string(),
        }
    }

    /// What kind of failure this is on the wire. Image failures keep the kind the images
    /// crate gave them (a missing tag is NotFound, an unreachable registry Unavailable).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchContainer(_) | Self::ImageNotPresent { .. } => ErrorKind::NotFound,
            Self::NotRunning { .. }
            | Self::Explain(berth_runtime::explain::ExplainError::Gone { .. }) => {
                ErrorKind::FailedPrecondition
            }
            Self::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Self::NetworkNotReady => ErrorKind::Unavailable,
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::Pull { source, .. } => source.kind().into(),
            Self::ImageStore { source, .. } | Self::OpenStore(source) => source.kind().into(),
            Self::Import { source, .. } => source.kind().into(),
            Self::Container { .. }
            | Self::Net(_)
            | Self::Shim(_)
            | Self::Dns(_)
            | Self::Explain(_)
            | Self::Io { .. }
            | Self::Internal { .. } => ErrorKind::Internal,
        }
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Self {
        e.kind().status(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

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
        let s: Status = AgentError::ImageNotPresent {
            reference: "nowhere/none:1".into(),
        }
        .into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("nowhere/none:1"));
        let s: Status = AgentError::ImageStore {
            reference: "busybox:1".into(),
            source: Box::new(StoreError::ImageNotFound("busybox:1".into())),
        }
        .into();
        assert_eq!(s.code(), Code::NotFound);
        let s: Status =
            AgentError::Unauthenticated("a client certificate is required".into()).into();
        assert_eq!(s.code(), Code::Unauthenticated);
        assert_eq!(s.message(), "a client certificate is required");
    }
}
