//! What can go wrong pulling from or pushing to a registry, always naming the registry,
//! repository, reference and the object (manifest or blob) concerned.

use std::fmt;
use std::sync::Arc;

use crate::ErrorKind;
use crate::store::StoreError;

/// Which way content moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Pull,
    Push,
}

impl Operation {
    /// The token scope's actions this operation needs on its repository.
    pub(super) fn scope_actions(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "pull,push",
        }
    }
}

/// The pull or push an error happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub operation: Operation,
    pub registry: String,
    pub repository: String,
    /// The tag or digest asked for.
    pub reference: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let separator = if self.reference.contains(':') {
            '@'
        } else {
            ':'
        };
        let (verb, preposition) = match self.operation {
            Operation::Pull => ("pulling", "from"),
            Operation::Push => ("pushing", "to"),
        };
        write!(
            f,
            "{verb} {}{separator}{} {preposition} registry {}",
            self.repository, self.reference, self.registry
        )
    }
}

/// A registry pull or push failure.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{target}: {object} not found{}", suffix(message))]
    NotFound {
        target: Arc<Target>,
        object: String,
        message: Option<String>,
    },
    #[error(
        "{target}: {object}: the registry answered HTTP {status}{}",
        suffix(message)
    )]
    Status {
        target: Arc<Target>,
        object: String,
        status: u16,
        message: Option<String>,
    },
    #[error("{target}: {object}: request to {url} failed")]
    Transport {
        target: Arc<Target>,
        object: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{target}: {object}: access denied (HTTP {status}){}", suffix(message))]
    Unauthorized {
        target: Arc<Target>,
        object: String,
        status: u16,
        message: Option<String>,
    },
    #[error("{target}: the registry requires a user name and password (HTTP basic auth{}) and none were given", realm.as_deref().map(|r| format!(", realm {r:?}")).unwrap_or_default())]
    CredentialsRequired {
        target: Arc<Target>,
        realm: Option<String>,
    },
    #[error("{target}: the registry asks for authentication berth does not support ({schemes})")]
    UnsupportedAuth {
        target: Arc<Target>,
        schemes: String,
    },
    #[error("{target}: getting a token from {realm} failed: {reason}")]
    Token {
        target: Arc<Target>,
        realm: String,
        reason: String,
    },
    #[error(
        "{target}: {object} has media type {media_type:?}: docker image manifest schema 1 is \
         deprecated and not supported (push the image again with a current client)"
    )]
    Schema1 {
        target: Arc<Target>,
        object: String,
        media_type: String,
    },
    #[error("{target}: {object} has media type {media_type:?}, which is not {expected}")]
    UnsupportedMediaType {
        target: Arc<Target>,
        object: String,
        media_type: String,
        expected: &'static str,
    },
    #[error(
        "{target}: {object} does not match its digest: the registry sent content hashing to {actual}, expected {expected} ({expected_from})"
    )]
    DigestMismatch {
        target: Arc<Target>,
        object: String,
        // Strings rather than `Digest`s keep the error small enough to return cheaply.
        expected: String,
        actual: String,
        /// Where the expected digest came from: the reference, an index, a header.
        expected_from: &'static str,
    },
    #[error(
        "{target}: the registry sent or announced {actual} bytes for {object}, but its descriptor says {expected}"
    )]
    SizeMismatch {
        target: Arc<Target>,
        object: String,
        expected: u64,
        actual: u64,
    },
    #[error("{target}: {object} is larger than the {limit} bytes allowed for a manifest")]
    TooLarge {
        target: Arc<Target>,
        object: String,
        limit: u64,
    },
    #[error("{target}: {object} is not a valid {kind}: {source}")]
    InvalidJson {
        target: Arc<Target>,
        object: String,
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{target}: {object} uses digest {digest}, but berth only stores sha256 content")]
    UnsupportedDigest {
        target: Arc<Target>,
        object: String,
        digest: String,
    },
    #[error("{target}: the index has no manifest for platform {wanted} (it has: {available})")]
    NoMatchingPlatform {
        target: Arc<Target>,
        wanted: String,
        available: String,
    },
    #[error("{target}: {object}: {source}")]
    Store {
        target: Arc<Target>,
        object: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("{target}: {object}: a background task failed: {reason}")]
    Task {
        target: Arc<Target>,
        object: String,
        reason: String,
    },
    #[error("{target}: {object}: the registry's answer cannot be followed: {reason}")]
    Protocol {
        target: Arc<Target>,
        object: String,
        reason: String,
    },
    #[error("setting up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl RegistryError {
    /// What kind of failure this is: the registry's HTTP status and the check that failed
    /// decide, not the wording.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } | Self::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            Self::Status { status, .. } => match *status {
                400 | 405 | 414 => ErrorKind::InvalidArgument,
                429 => ErrorKind::ResourceExhausted,
                // 5xx and anything unforeseen: the registry's side, worth trying again.
                _ => ErrorKind::Unavailable,
            },
            // A registry breaking the protocol is its side's fault, as a 5xx is.
            Self::Transport { .. } | Self::Token { .. } | Self::Protocol { .. } => {
                ErrorKind::Unavailable
            }
            Self::Unauthorized { status: 403, .. } => ErrorKind::PermissionDenied,
            Self::Unauthorized { .. } | Self::CredentialsRequired { .. } => {
                ErrorKind::Unauthenticated
            }
            Self::UnsupportedAuth { .. }
            | Self::Schema1 { .. }
            | Self::UnsupportedMediaType { .. }
            | Self::UnsupportedDigest { .. } => ErrorKind::Unsupported,
            Self::DigestMismatch { .. } | Self::SizeMismatch { .. } | Self::InvalidJson { .. } => {
                ErrorKind::DataLoss
            }
            Self::TooLarge { .. } => ErrorKind::ResourceExhausted,
            Self::Store { source, .. } => source.kind(),
            Self::Task { .. } | Self::Client(_) => ErrorKind::Internal,
        }
    }
}

fn suffix(message: &Option<String>) -> String {
    message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// The `errors` array registries answer failures with (distribution spec "Error Codes").
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<ErrorEntry>,
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct ErrorEntry {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl ErrorBody {
    /// Parses an error body; anything that is not the registry JSON gives an empty one.
    pub(super) fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// `CODE: message; CODE: message`, or None when the registry said nothing usable.
    pub(super) fn summary(&self) -> Option<String> {
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                (true, _) => e.message.clone(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// True when a code says the named thing does not exist.
    pub(super) fn says_unknown(&self) -> bool {
        self.errors.iter().any(|e| {
            matches!(
                e.code.as_str(),
                "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_bodies_are_summarized() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"nope"}}]}"#;
        let parsed = ErrorBody::parse(body);
        assert!(parsed.says_unknown());
        assert_eq!(
            parsed.summary().as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(ErrorBody::parse(b"<html>oops</html>").summary(), None);
    }

    #[test]
    fn kinds_follow_the_registry_answer_not_the_wording() {
        let target = Arc::new(Target {
            operation: Operation::Pull,
            registry: "127.0.0.1:5000".into(),
            repository: "busybox".into(),
            reference: "nope".into(),
        });
        let object = || "manifest nope".to_string();
        let not_found = RegistryError::NotFound {
            target: target.clone(),
            object: object(),
            message: None,
        };
        assert_eq!(not_found.kind(), ErrorKind::NotFound);
        let denied = |status| RegistryError::Unauthorized {
            target: target.clone(),
            object: object(),
            status,
            message: None,
        };
        assert_eq!(denied(401).kind(), ErrorKind::Unauthenticated);
        assert_eq!(denied(403).kind(), ErrorKind::PermissionDenied);
        let answered = |status| RegistryError::Status {
            target: target.clone(),
            object: object(),
            status,
            message: None,
        };
        assert_eq!(answered(503).kind(), ErrorKind::Unavailable);
        assert_eq!(answered(400).kind(), ErrorKind::InvalidArgument);
        let corrupt = RegistryError::SizeMismatch {
            target: target.clone(),
            object: object(),
            expected: 1,
            actual: 2,
        };
        assert_eq!(corrupt.kind(), ErrorKind::DataLoss);
        let stored = RegistryError::Store {
            target,
            object: object(),
            source: Box::new(StoreError::ImageNotFound("busybox:nope".into())),
        };
        assert_eq!(stored.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn targets_name_registry_repository_and_reference() {
        let mut target = Target {
            operation: Operation::Pull,
            registry: "127.0.0.1:5000".into(),
            repository: "busybox".into(),
            reference: "1".into(),
        };
        assert_eq!(
            target.to_string(),
            "pulling busybox:1 from registry 127.0.0.1:5000"
        );
        target.operation = Operation::Push;
        assert_eq!(
            target.to_string(),
            "pushing busybox:1 to registry 127.0.0.1:5000"
        );
    }
}
