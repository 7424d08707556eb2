//! berth's exit statuses: a rollout's outcome for `--wait`, and otherwise the kind of the
//! error, so that scripts can tell "no such deployment" from "scheduler down" without
//! reading stderr. The table is in the README's CLI section and `berth --help`.

use berth_proto::errors::ErrorKind;

/// Success; with `--wait`: the rollout completed.
pub(crate) const COMPLETE: i32 = 0;
/// Any other failure; with `--wait`: the rollout failed, was rolled back or was rejected.
pub(crate) const FAILED: i32 = 1;
/// Bad usage or an invalid argument (clap's own code for a bad command line, too).
pub(crate) const USAGE: i32 = 2;
/// With `--wait --stop-at-approval`: the rollout waits for `berth approve`.
pub(crate) const AWAITING_APPROVAL: i32 = 3;
/// `--timeout` passed before the rollout reached an end, or a deadline was exceeded.
pub(crate) const TIMEOUT: i32 = 4;
/// The deployment, container, node or image named does not exist.
pub(crate) const NOT_FOUND: i32 = 5;
/// The state does not allow it: it exists already, a precondition fails, or it changed
/// meanwhile (try again).
pub(crate) const CONFLICT: i32 = 6;
/// The scheduler, agent or registry cannot be reached or is not ready.
pub(crate) const UNAVAILABLE: i32 = 7;
/// No valid credentials, or the credentials may not do this.
pub(crate) const DENIED: i32 = 8;

/// The exit status for an error of `kind`.
pub(crate) fn for_kind(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::InvalidArgument => USAGE,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition | ErrorKind::Conflict => CONFLICT,
        ErrorKind::Unavailable => UNAVAILABLE,
        ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => DENIED,
        ErrorKind::DeadlineExceeded => TIMEOUT,
        ErrorKind::ResourceExhausted
        | ErrorKind::Cancelled
        | ErrorKind::NotImplemented
        | ErrorKind::DataLoss
        | ErrorKind::Internal
        | ErrorKind::Unknown => FAILED,
    }
}

/// A server's refusal, as the CLI reports it: the message (which names the object) for
/// people, the kind for the exit status. The CLI's own refusals before anything is sent take
/// the same form (see [`refused`]).
#[derive(Debug)]
pub(crate) struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoteError {}

impl From<tonic::Status> for RemoteError {
    fn from(status: tonic::Status) -> Self {
        // An empty message (e.g. Unimplemented from a scheduler older than the call) would
        // print as a bare "berth: ": say what the code means instead.
        let message = match status.message() {
            "" => format!("the server answered: {}", status.code()),
            m => m.to_string(),
        };
        Self {
            kind: ErrorKind::of(&status),
            message,
        }
    }
}

/// A refusal made here, before anything is sent, with the kind that picks its exit status.
pub(crate) fn refused(kind: ErrorKind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(RemoteError {
        kind,
        message: message.into(),
    })
}

/// The kind of a failed command's error: the first cause that has one decides. A connection
/// that could not be made is Unavailable, unless the address itself was malformed.
pub(crate) fn kind_of(err: &anyhow::Error) -> ErrorKind {
    if err.chain().any(|c| c.is::<http::uri::InvalidUri>()) {
        return ErrorKind::InvalidArgument;
    }
    err.chain()
        .find_map(|cause| {
            if let Some(e) = cause.downcast_ref::<RemoteError>() {
                Some(e.kind)
            } else if let Some(status) = cause.downcast_ref::<tonic::Status>() {
                Some(ErrorKind::of(status))
            } else if let Some(e) = cause.downcast_ref::<berth_images::registry::RegistryError>() {
                Some(e.kind().into())
            } else if let Some(e) = cause.downcast_ref::<berth_images::StoreError>() {
                Some(e.kind().into())
            } else if let Some(e) =
                cause.downcast_ref::<berth_images::containerfile::ContainerfileError>()
            {
                Some(e.kind().into())
            } else if let Some(e) = cause.downcast_ref::<berth_images::import::ImportError>() {
                Some(e.kind().into())
            } else if let Some(e) = cause.downcast_ref::<berth_images::volumes::VolumeError>() {
                Some(e.kind().into())
            } else if cause.is::<tonic::transport::Error>() {
                Some(ErrorKind::Unavailable)
            } else {
                None
            }
        })
        .unwrap_or(ErrorKind::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_documented_status_and_outcomes_keep_theirs() {
        let documented = [
            FAILED,
            USAGE,
            TIMEOUT,
            NOT_FOUND,
            CONFLICT,
            UNAVAILABLE,
            DENIED,
        ];
        for kind in ErrorKind::ALL {
            let code = for_kind(kind);
            assert!(documented.contains(&code), "{kind}: {code}");
            assert_ne!(code, COMPLETE, "{kind}");
            assert_ne!(code, AWAITING_APPROVAL, "{kind}");
        }
        assert_eq!(for_kind(ErrorKind::NotFound), NOT_FOUND);
        assert_eq!(for_kind(ErrorKind::InvalidArgument), USAGE);
        assert_eq!(for_kind(ErrorKind::Unavailable), UNAVAILABLE);
    }

    #[test]
    fn the_kind_comes_back_from_a_status_through_context() {
        let err = anyhow::Error::new(RemoteError::from(tonic::Status::not_found(
            "deployment web not found",
        )))
        .context("describing web");
        assert_eq!(kind_of(&err), ErrorKind::NotFound);
        assert_eq!(err.root_cause().to_string(), "deployment web not found");
        let err = anyhow::Error::new(tonic::Status::permission_denied("viewer")).context("x");
        assert_eq!(kind_of(&err), ErrorKind::PermissionDenied);
        assert_eq!(kind_of(&anyhow::anyhow!("plain")), ErrorKind::Unknown);
        let bare = RemoteError::from(tonic::Status::unimplemented(""));
        assert!(bare.message.contains("not implemented"), "{}", bare.message);
        let bad = tonic::transport::Endpoint::from_shared("http://[::1".to_string()).unwrap_err();
        assert_eq!(
            kind_of(&anyhow::Error::new(bad)),
            ErrorKind::InvalidArgument
        );
    }
}
