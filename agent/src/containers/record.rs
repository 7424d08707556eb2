//! What the agent remembers of a container across its own restarts: the assignment, and the
//! restart count and last outcome (the shim keeps the process's own state).

use std::fs;
use std::path::Path;

use berth_proto::v1::Assignment;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::layout::ContainerPaths;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub restart_count: u32,
    /// Failures in a row without a long enough run in between (drives the backoff).
    pub consecutive_failures: u32,
    pub last_exit_code: Option<i32>,
    pub last_oom_killed: bool,
    pub last_finished_at_ms: i64,
    /// The exit record already reported and acted on (its finished time), so an adopted
    /// exit is not counted twice.
    pub handled_exit_ms: i64,
    /// Set once the restart policy has given up.
    pub gave_up: Option<String>,
}

/// Writes `bytes` to `path` crash-safely ([`berth_runtime::sys::fs::atomic_write`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    berth_runtime::sys::fs::atomic_write(path, bytes)
        .map_err(AgentError::io(format!("writing {}", path.display())))
}

pub fn save_assignment(paths: &ContainerPaths, a: &Assignment) -> Result<(), AgentError> {
    write_atomic(&paths.assignment(), &a.encode_to_vec())
}

pub fn load_assignment(paths: &ContainerPaths) -> Result<Assignment, AgentError> {
    let bytes = fs::read(paths.assignment()).map_err(AgentError::io(format!(
        "reading {}",
        paths.assignment().display()
    )))?;
    Assignment::decode(bytes.as_slice()).map_err(|e| AgentError::Container {
        id: paths.id.clone(),
        reason: format!("{} is corrupt: {e}", paths.assignment().display()),
    })
}

pub fn save_record(paths: &ContainerPaths, r: &Record) -> Result<(), AgentError> {
    let json = serde_json::to_vec_pretty(r).expect("a record serialises");
    write_atomic(&paths.record(), &json)
}

/// The record, or a fresh one when there is none (or it cannot be read).
pub fn load_record(paths: &ContainerPaths) -> Record {
    fs::read(paths.record())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    #[test]
    fn assignment_and_record_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Layout::new(dir.path()).container("web-1");
        fs::create_dir_all(&paths.dir).unwrap();
        let a = Assignment {
            container_id: "web-1".into(),
            args: vec!["sleep".into(), "1".into()],
            ..Default::default()
        };
        save_assignment(&paths, &a).unwrap();
        assert_eq!(load_assignment(&paths).unwrap(), a);
        assert_eq!(load_record(&paths), Record::default());
        let r = Record {
            restart_count: 2,
            last_exit_code: Some(3),
            ..Default::default()
        };
        save_record(&paths, &r).unwrap();
        assert_eq!(load_record(&paths), r);
        fs::write(paths.assignment(), b"\xff\xff\xff").unwrap();
        let e = load_assignment(&paths).unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("web-1"), "{e}");
    }
}
