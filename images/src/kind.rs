//! What kind of failure an image error is, so that callers (the agent's gRPC answers, the
//! CLI's exit status) can tell a missing image from an unreachable registry without parsing
//! messages. With the `proto` feature they map into the wire's wider set, `berth_proto::errors::ErrorKind`.

/// The kind of an image failure (pull, store, reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A bad reference, name or digest given by the caller.
    InvalidArgument,
    /// The image, manifest, blob or platform does not exist.
    NotFound,
    /// The registry cannot be reached, or failed on its side (HTTP 5xx).
    Unavailable,
    /// The registry wants credentials that were not given or were refused (HTTP 401).
    Unauthenticated,
    /// The registry knows the caller and refuses (HTTP 403).
    PermissionDenied,
    /// Content larger than berth accepts.
    ResourceExhausted,
    /// A format, media type, digest algorithm or auth scheme berth does not support.
    Unsupported,
    /// Content that does not match its digest or size, or is not what it claims to be.
    DataLoss,
    /// A local fault: disk I/O, a task that died.
    Internal,
    /// The object exists already (a volume created twice).
    AlreadyExists,
    /// The state does not allow it (a volume in use).
    Conflict,
}

/// Image failures (pull, import, store) carry the images crate's narrower kind; this is where
/// it joins the wire's set.
#[cfg(feature = "proto")]
impl From<ErrorKind> for berth_proto::errors::ErrorKind {
    fn from(kind: ErrorKind) -> Self {
        use ErrorKind as K;
        match kind {
            K::InvalidArgument => Self::InvalidArgument,
            K::NotFound => Self::NotFound,
            K::Unavailable => Self::Unavailable,
            K::Unauthenticated => Self::Unauthenticated,
            K::PermissionDenied => Self::PermissionDenied,
            K::ResourceExhausted => Self::ResourceExhausted,
            K::Unsupported => Self::NotImplemented,
            K::DataLoss => Self::DataLoss,
            K::Internal => Self::Internal,
            K::AlreadyExists => Self::AlreadyExists,
            K::Conflict => Self::Conflict,
        }
    }
}
