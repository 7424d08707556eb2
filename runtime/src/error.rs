//! Typed errors of the runtime library; each carries the path, field or object it is about.

use std::path::PathBuf;

use nix::errno::Errno;

/// A result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the runtime library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {path}: {errno}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        errno: Errno,
    },
    #[error("invalid config.json {path}: {reason}")]
    InvalidSpec { path: PathBuf, reason: String },
    #[error("config.json field {field}: {reason}")]
    SpecField { field: &'static str, reason: String },
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("container {0} already exists")]
    AlreadyExists(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container {id} is {status}: cannot {action}")]
    WrongState {
        id: String,
        status: String,
        action: &'static str,
    },
    #[error("corrupt state file {path}: {reason}")]
    CorruptState { path: PathBuf, reason: String },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
    /// `--systemd-cgroup` on a host that cannot honour it (the text says why).
    #[error("{0}")]
    SystemdCgroup(String),
    #[error("seccomp: {0}")]
    Seccomp(String),
    #[error("security option {option}: {reason}")]
    Security { option: String, reason: String },
    #[error("{hook} hook {path}: {reason}")]
    Hook {
        hook: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("container init: {0}")]
    Init(String),
    /// Init's channel closed before the runtime sent what init waited for: the runtime failed
    /// (and reports why itself) or was killed.
    #[error("container init: runtime went away waiting for {0}")]
    RuntimeGone(&'static str),
    /// A failure inside init, named by the step it happened in (the text crosses to the
    /// runtime, or to stderr after `start`, so it must say where as well as why).
    #[error("{step}: {source}")]
    InitStep {
        step: &'static str,
        #[source]
        source: Box<Error>,
    },
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
}

impl Error {
    /// Whether init failed because the runtime closed its channel (through any named steps).
    pub fn is_runtime_gone(&self) -> bool {
        match self {
            Error::RuntimeGone(_) => true,
            Error::InitStep { source, .. } => source.is_runtime_gone(),
            _ => false,
        }
    }

    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A failed system call `op` on `path`.
    pub fn sys(op: &'static str, path: impl Into<PathBuf>, errno: Errno) -> Self {
        Error::Sys {
            op,
            path: path.into(),
            errno,
        }
    }

    /// Names the init step `step` in a failure.
    pub fn in_step(step: &'static str) -> impl FnOnce(Error) -> Error {
        move |source| Error::InitStep {
            step,
            source: Box::new(source),
        }
    }

    /// A config.json field that cannot be honoured.
    pub fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Error::SpecField {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn the_runtime_going_away_is_recognised_through_named_steps() {
        let gone = Error::in_step("waiting")(Error::in_step("hooks")(Error::RuntimeGone("go")));
        assert!(gone.is_runtime_gone());
        assert_eq!(
            gone.to_string(),
            "waiting: hooks: container init: runtime went away waiting for go"
        );
        let other = Error::in_step("waiting")(Error::Init("exec fifo closed".into()));
        assert!(!other.is_runtime_gone());
    }
}
