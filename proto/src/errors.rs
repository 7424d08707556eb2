//! The one set of error kinds on both sides of the wire (as containerd's errdefs/errgrpc):
//! daemons classify their errors into an [`ErrorKind`] and build the `tonic::Status` from it
//! here; clients read the kind back from the status code.

use tonic::{Code, Status};

/// What kind of failure an error is, whichever side of the wire it was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is wrong: a field, a name, a reference.
    InvalidArgument,
    /// The object asked for does not exist.
    NotFound,
    /// The object to create exists already.
    AlreadyExists,
    /// The system is not in the state the call needs (e.g. no rollout awaits approval).
    FailedPrecondition,
    /// The state changed under the call (a lost compare-and-swap); trying again may succeed.
    Conflict,
    /// The service or a peer it needs cannot be reached now; trying again later may succeed.
    Unavailable,
    /// No credentials, or credentials that do not check out.
    Unauthenticated,
    /// Known caller, but not allowed to do this.
    PermissionDenied,
    /// A limit or quota ran out (message size, addresses, capacity).
    ResourceExhausted,
    /// A deadline passed before the call finished.
    DeadlineExceeded,
    /// The call was cancelled, usually by its caller.
    Cancelled,
    /// The server does not implement the call.
    NotImplemented,
    /// Data was lost or is corrupt (e.g. content that does not match its digest).
    DataLoss,
    /// A fault of the server; the message says what.
    Internal,
    /// Nothing more is known.
    Unknown,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: [ErrorKind; 15] = [
        Self::InvalidArgument,
        Self::NotFound,
        Self::AlreadyExists,
        Self::FailedPrecondition,
        Self::Conflict,
        Self::Unavailable,
        Self::Unauthenticated,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::DeadlineExceeded,
        Self::Cancelled,
        Self::NotImplemented,
        Self::DataLoss,
        Self::Internal,
        Self::Unknown,
    ];

    /// The gRPC code a kind travels as.
    pub fn to_code(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::Conflict => Code::Aborted,
            Self::Unavailable => Code::Unavailable,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Cancelled => Code::Cancelled,
            Self::NotImplemented => Code::Unimplemented,
            Self::DataLoss => Code::DataLoss,
            Self::Internal => Code::Internal,
            Self::Unknown => Code::Unknown,
        }
    }

    /// The kind a gRPC code stands for. OutOfRange is a bad argument; Ok is no error at all,
    /// so a status carrying it is Unknown.
    pub fn from_code(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::FailedPrecondition => Self::FailedPrecondition,
            Code::Aborted => Self::Conflict,
            Code::Unavailable => Self::Unavailable,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::DeadlineExceeded => Self::DeadlineExceeded,
            Code::Cancelled => Self::Cancelled,
            Code::Unimplemented => Self::NotImplemented,
            Code::DataLoss => Self::DataLoss,
            Code::Internal => Self::Internal,
            Code::Ok | Code::Unknown => Self::Unknown,
        }
    }

    /// The kind of a status a server answered with.
    pub fn of(status: &Status) -> Self {
        Self::from_code(status.code())
    }

    /// A status of this kind with `message` (which names the object or field concerned).
    pub fn status(self, message: impl Into<String>) -> Status {
        Status::new(self.to_code(), message)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_goes_to_a_code_of_its_own_and_back() {
        let mut codes = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            let code = kind.to_code();
            assert!(
                codes.insert(code),
                "{kind} shares {code:?} with another kind"
            );
            assert_eq!(ErrorKind::from_code(code), kind, "{code:?}");
            let status = kind.status(format!("deployment web: {kind}"));
            assert_eq!(ErrorKind::of(&status), kind);
            assert_eq!(status.message(), format!("deployment web: {kind}"));
        }
        assert!(!codes.contains(&Code::Ok));
    }

    #[test]
    fn codes_without_a_kind_of_their_own_fold_into_the_nearest() {
        assert_eq!(
            ErrorKind::from_code(Code::OutOfRange),
            ErrorKind::InvalidArgument
        );
        assert_eq!(ErrorKind::from_code(Code::Ok), ErrorKind::Unknown);
    }
}
