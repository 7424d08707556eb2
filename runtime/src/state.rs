//! Per-container state under the runtime root: id rules, state.json (written atomically) and
//! the status derived from the live process, as runc derives it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where state lives when `--root` is not given.
pub const DEFAULT_ROOT: &str = "/run/berth-runtime";
/// The FIFO init blocks on until `start`; its presence means "created".
pub const EXEC_FIFO: &str = "exec.fifo";
const STATE_FILE: &str = "state.json";

/// The OCI status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The OCI state as `state` prints it and hooks read it (runc's field names).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// What state.json holds: the OCI state plus what later commands need to find the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    #[serde(flatten)]
    pub oci: OciState,
    /// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat): a recycled
    /// pid has another start time.
    pub pid_start_time: u64,
    /// The cgroup path relative to each hierarchy's root.
    pub cgroup_path: PathBuf,
    /// The driver create used (and the systemd unit): every later command uses the same,
    /// whatever flags it is given.
    #[serde(default)]
    pub cgroup_driver: crate::cgroup_driver::CgroupDriver,
    /// The poststart and poststop hooks as config.json had them at create (the bundle may
    /// change or vanish before `start` and `delete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<oci_spec::runtime::Hooks>,
}

/// Checks a container id: non-empty, at most 1024 characters of `[A-Za-z0-9_.+-]`, and not
/// `.` or `..`, so that it is always a single, fresh directory name.
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > 1024 {
        return bad("longer than 1024 characters");
    }
    if id == "." || id == ".." || id.contains("..") {
        return bad("must not contain \"..\"");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'))
    {
        return bad("only A-Z a-z 0-9 _ . + - are allowed");
    }
    Ok(())
}

/// The state directory of container `id` under `root`.
pub fn container_dir(root: &Path, id: &str) -> Result<PathBuf> {
    validate_id(id)?;
    Ok(root.join(id))
}

impl ContainerState {
    /// Writes state.json into `dir` through a temporary file and a rename, so readers never see
    /// a half-written file. Not fsynced: the state lives under /run and means nothing after a
    /// reboot, while an fsync would cost milliseconds on every create.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let json = serde_json::to_vec(self).map_err(|e| Error::CorruptState {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        crate::sys::fs::atomic_write_with(&path, &json, crate::sys::fs::VOLATILE)
            .map_err(|e| Error::io(&path, e))
    }

    /// Reads the state of `id`; `NotFound` when there is no such container.
    pub fn load(root: &Path, id: &str) -> Result<Self> {
        let path = container_dir(root, id)?.join(STATE_FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()));
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        serde_json::from_slice(&text).map_err(|e| Error::CorruptState {
            path,
            reason: e.to_string(),
        })
    }

    /// The live status: stopped unless the recorded pid still runs with the same start time;
    /// created while the exec FIFO exists; paused while the freezer holds the cgroup.
    pub fn refresh_status(&mut self, dir: &Path) {
        self.oci.status = if !crate::sys::proc_stat::is_alive(self.oci.pid, self.pid_start_time) {
            Status::Stopped
        } else if dir.join(EXEC_FIFO).exists() {
            Status::Created
        } else if crate::cgroups::is_frozen(&self.cgroup_path) {
            Status::Paused
        } else {
            Status::Running
        };
    }
}

/// The current time as RFC 3339 with nanoseconds in UTC, like runc's `created`.
pub fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(
        i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        now.subsec_nanos(),
    )
}

fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "web-1", "x_y.z+1", &"a".repeat(1024)] {
            validate_id(good).unwrap();
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "..",
            ".",
            "a..b",
            "sp ace",
            "é",
            &"a".repeat(1025),
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_795_610_745, 0), "2026-11-25T12:45:45.000000000Z");
    }

    #[test]
    fn status_follows_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::getpid().as_raw();
        let start = crate::sys::proc_stat::read(me).unwrap().start_time;
        let mut state = ContainerState {
            oci: OciState {
                oci_version: "1.0.2".into(),
                id: "t".into(),
                pid: me,
                status: Status::Created,
                bundle: "/b".into(),
                rootfs: "/b/rootfs".into(),
                created: rfc3339_now(),
                owner: String::new(),
                annotations: HashMap::new(),
            },
            pid_start_time: start,
            cgroup_path: "/berth-unit-test-no-such-cgroup".into(),
            cgroup_driver: crate::cgroup_driver::CgroupDriver::Cgroupfs,
            hooks: None,
        };
        state.save(dir.path()).unwrap();
        std::fs::write(dir.path().join(EXEC_FIFO), "").unwrap();
        state.refresh_status(dir.path());
        assert_eq!(state.oci.status, Status::Created);
        std::fs::remove_file(dir.path().join(EXEC_FIFO)).unwrap();
        state.refresh_status(dir.path());
        assert_eq!(state.oci.status, Status::Running);
        state.pid_start_time += 1;
        state.refresh_status(dir.path());
        assert_eq!(state.oci.status, Status::Stopped);
        let json = serde_json::to_value(&state.oci).unwrap();
        for key in [
            "ociVersion",
            "id",
            "pid",
            "status",
            "bundle",
            "rootfs",
            "created",
            "owner",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
    }
}
