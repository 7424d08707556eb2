//! The caller's side of `berth-shim` (the agent's and `berth run -d`'s): start one, find it
//! again after a restart, wait for the container's end and stop it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::paths::ShimPaths;
use crate::{ExitRecord, ShimState};

/// How long `create` and `start` may take before [`start`] gives up on the shim.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`stop`] waits after SIGKILL before it reports the container stuck.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(30);

/// Default cap of each log part (as the kubelet's containerLogMaxSize).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 << 20;

/// Default number of log parts kept, ctr.log included (as containerLogMaxFiles).
pub const DEFAULT_LOG_FILES: u32 = 5;

/// The shim's errors, each naming the container (or the file) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{what} not found at {path} (expected beside the calling executable)")]
    BinaryMissing { what: &'static str, path: PathBuf },
    #[error("{what} not found beside {exe} nor in a directory of $PATH")]
    NotFound { what: &'static str, exe: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: malformed: {source}")]
    Malformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("container {id}: running the shim {path}: {source}")]
    Spawn {
        id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("container {id}: {reason}")]
    Start { id: String, reason: String },
    #[error("container {id}: the shim exited without a report ({status})")]
    NoReport { id: String, status: String },
    #[error("container {id}: the shim reported nothing within {timeout:?}; it was killed")]
    StartTimeout { id: String, timeout: Duration },
    #[error("container {id}: the shim's report is unexpected: {line:?}")]
    BadReport { id: String, line: String },
    #[error("container {id}: the shim (pid {pid}) is gone and left no {}", path.display())]
    Vanished { id: String, pid: u32, path: PathBuf },
    #[error("container {id}: berth-runtime {command}: {reason}")]
    Runtime {
        id: String,
        command: String,
        reason: String,
    },
    #[error("container {id}: still running {timeout:?} after SIGKILL")]
    StopTimeout { id: String, timeout: Duration },
}

impl ShimError {
    fn io(path: &Path, source: io::Error) -> Self {
        ShimError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where the binaries are and how the shim keeps logs.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    pub shim_binary: PathBuf,
    pub runtime_binary: PathBuf,
    /// Each log part's cap in bytes (0: never rotate).
    pub log_max_bytes: u64,
    /// Log parts kept in all, ctr.log included.
    pub log_files: u32,
    /// What the shim runs once the container is deleted (program and arguments; empty:
    /// nothing), as conmon's `--exit-command`.
    pub exit_command: Vec<OsString>,
    /// Containers get systemd scopes (the shim calls the runtime with `--systemd-cgroup`).
    pub systemd_cgroup: bool,
}

impl ShimConfig {
    /// `berth-shim` and `berth-runtime` beside the current executable, with the default log
    /// limits; an error names the path looked at.
    pub fn beside_current_exe() -> Result<Self, ShimError> {
        let exe = current_exe()?;
        Self::in_dir(exe.parent().unwrap_or(Path::new("/")))
    }

    /// `berth-shim` and `berth-runtime` in `dir`, with the default log limits.
    pub fn in_dir(dir: &Path) -> Result<Self, ShimError> {
        let find = |what: &'static str| {
            let path = dir.join(what);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ShimError::BinaryMissing { what, path })
            }
        };
        Self::with_binaries(find)
    }

    /// `berth-shim` and `berth-runtime`, each beside the current executable or else in the
    /// first directory of `$PATH` that has it, with the default log limits.
    pub fn beside_current_exe_or_on_path() -> Result<Self, ShimError> {
        let exe = current_exe()?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        Self::beside_or_on_path(&exe, &path)
    }

    /// As [`Self::beside_current_exe_or_on_path`], for the executable `exe` and the search
    /// path `path` (a `$PATH` value).
    pub fn beside_or_on_path(exe: &Path, path: &OsStr) -> Result<Self, ShimError> {
        let dir = exe.parent().unwrap_or(Path::new("/"));
        let find = |what: &'static str| {
            std::iter::once(dir.to_path_buf())
                .chain(std::env::split_paths(path))
                .map(|d| d.join(what))
                .find(|p| p.is_file())
                .ok_or_else(|| ShimError::NotFound {
                    what,
                    exe: exe.to_path_buf(),
                })
        };
        Self::with_binaries(find)
    }

    /// The two binaries as `find` finds them, the default log limits and no exit command.
    fn with_binaries(
        find: impl Fn(&'static str) -> Result<PathBuf, ShimError>,
    ) -> Result<Self, ShimError> {
        Ok(ShimConfig {
            shim_binary: find("berth-shim")?,
            runtime_binary: find("berth-runtime")?,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            log_files: DEFAULT_LOG_FILES,
            exit_command: Vec::new(),
            systemd_cgroup: false,
        })
    }
}

fn current_exe() -> Result<PathBuf, ShimError> {
    std::env::current_exe().map_err(|e| ShimError::io(Path::new("/proc/self/exe"), e))
}

fn remove_stale(path: &Path) -> Result<(), ShimError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ShimError::io(path, e)),
        _ => Ok(()),
    }
}

/// Starts the shim for the bundle in `paths.dir` and returns once the container runs, with
/// the shim's reason when it does not (then only after the shim has deleted what it made).
/// The shim is left running on its own (it survives its caller); a task reaps it while the
/// caller's runtime lives.
pub async fn start(cfg: &ShimConfig, paths: &ShimPaths) -> Result<ShimState, ShimError> {
    let id = &paths.id;
    if lock_held(paths) {
        // Its files are a live shim's: never removed, never a second container.
        return Err(ShimError::Start {
            id: id.clone(),
            reason: "another shim already runs this container".into(),
        });
    }
    remove_stale(&paths.shim_state())?;
    remove_stale(&paths.exit())?;
    std::fs::create_dir_all(&paths.dir).map_err(|e| ShimError::io(&paths.dir, e))?;
    let mut child = spawn(cfg, paths)?;
    let line = read_report(cfg, paths, &mut child).await?;
    if let Some(reason) = line.strip_prefix("error: ") {
        // The shim deletes the container after its report: wait for that, so that the
        // caller's own cleanup does not race it.
        let _ = tokio::time::timeout(START_TIMEOUT, child.wait()).await;
        return Err(ShimError::Start {
            id: id.clone(),
            reason: reason.to_string(),
        });
    }
    // Reaps the shim if it ends while the caller runs; kill_on_drop(false) keeps it alive
    // when the caller goes.
    tokio::spawn(async move { child.wait().await });
    let bad = || ShimError::BadReport {
        id: id.clone(),
        line: line.clone(),
    };
    let pid: u32 = line
        .strip_prefix("ok ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(bad)?;
    let state = read_state(paths)?.ok_or_else(bad)?;
    if state.container_pid != pid {
        return Err(bad());
    }
    Ok(state)
}

/// Runs the shim binary with the container's arguments, its report pipe on stdout and its
/// stderr in shim.log.
fn spawn(cfg: &ShimConfig, paths: &ShimPaths) -> Result<tokio::process::Child, ShimError> {
    let shim_log =
        std::fs::File::create(paths.shim_log()).map_err(|e| ShimError::io(&paths.shim_log(), e))?;
    let mut cmd = tokio::process::Command::new(&cfg.shim_binary);
    cmd.arg("--id")
        .arg(&paths.id)
        .arg("--bundle")
        .arg(&paths.dir)
        .arg("--runtime")
        .arg(&cfg.runtime_binary)
        .arg("--runtime-root")
        .arg(&paths.runtime_root)
        .arg("--dir")
        .arg(&paths.dir)
        .arg("--log-max-bytes")
        .arg(cfg.log_max_bytes.to_string())
        .arg("--log-files")
        .arg(cfg.log_files.to_string());
    if cfg.systemd_cgroup {
        cmd.args(["--cgroup-driver", "systemd"]);
    }
    if let Some((program, rest)) = cfg.exit_command.split_first() {
        cmd.arg("--exit-command").arg(program);
        for arg in rest {
            cmd.arg("--exit-command-arg").arg(arg);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(shim_log))
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| ShimError::Spawn {
            id: paths.id.clone(),
            path: cfg.shim_binary.clone(),
            source,
        })
}

/// The shim's one-line report (`ok PID` or `error: REASON`), trimmed. A shim that says
/// nothing within [`START_TIMEOUT`] is killed; one that ends without a word is described by
/// its exit status and shim.log.
async fn read_report(
    cfg: &ShimConfig,
    paths: &ShimPaths,
    child: &mut tokio::process::Child,
) -> Result<String, ShimError> {
    let id = &paths.id;
    let Some(stdout) = child.stdout.take() else {
        return Err(ShimError::NoReport {
            id: id.clone(),
            status: "no stdout".into(),
        });
    };
    let mut line = String::new();
    let read =
        tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    match read {
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let _ = runtime(cfg, paths, &["delete", "--force", id]).await;
            return Err(ShimError::StartTimeout {
                id: id.clone(),
                timeout: START_TIMEOUT,
            });
        }
        Ok(Err(e)) => {
            return Err(ShimError::Io {
                path: PathBuf::from(format!("{} (stdout)", cfg.shim_binary.display())),
                source: e,
            });
        }
        Ok(Ok(_)) => {}
    }
    let line = line.trim_end();
    if !line.is_empty() {
        return Ok(line.to_string());
    }
    // It died before a word (a crash): its status says how, and shim.log why.
    let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(s)) => s.to_string(),
        _ => "still running".into(),
    };
    let detail = std::fs::read_to_string(paths.shim_log()).unwrap_or_default();
    let detail = detail.trim();
    Err(ShimError::NoReport {
        id: id.clone(),
        status: if detail.is_empty() {
            status
        } else {
            format!("{status}: {}", detail.replace('\n', " "))
        },
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ShimError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ShimError::Malformed {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ShimError::io(path, e)),
    }
}

/// `shim.json`, if the shim has started the container.
pub fn read_state(paths: &ShimPaths) -> Result<Option<ShimState>, ShimError> {
    read_json(&paths.shim_state())
}

/// `exit.json`, if the container has ended.
pub fn read_exit(paths: &ShimPaths) -> Result<Option<ExitRecord>, ShimError> {
    read_json(&paths.exit())
}

/// Whether a shim holds the container's lock: it runs, even if it has not written shim.json
/// yet (an agent that died while starting it).
pub fn lock_held(paths: &ShimPaths) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(paths.shim_lock())
    else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_unlocked_on_drop) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Whether the shim of `state` still runs: its pid exists, is no zombie, and started when the
/// shim did (not a later process with a reused pid).
pub fn is_alive(state: &ShimState) -> bool {
    i32::try_from(state.shim_pid)
        .is_ok_and(|pid| berth_runtime::sys::proc_stat::is_alive(pid, state.shim_start_time))
}

/// Waits for the shim of `state` to end and returns `exit.json`. Works whether the shim is
/// this process's child or one found again after an agent restart (it waits on a pidfd,
/// which becomes readable when the process exits, whoever its parent is).
pub async fn wait_exit(paths: &ShimPaths, state: &ShimState) -> Result<ExitRecord, ShimError> {
    let pid_path = || PathBuf::from(format!("pidfd_open({})", state.shim_pid));
    let pid = i32::try_from(state.shim_pid)
        .map_err(|e| ShimError::io(&pid_path(), io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let pidfd = berth_runtime::sys::pidfd::open(pid).map_err(|e| ShimError::io(&pid_path(), e))?;
    if let Some(fd) = pidfd {
        // Checked after opening: the pidfd pins this very process, so a matching start time
        // means it is the shim and no pid reuse can swap it from here on.
        if berth_runtime::sys::proc_stat::read(pid)
            .is_some_and(|s| s.start_time == state.shim_start_time)
        {
            // SAFETY: the OwnedFd is moved into the AsyncFd, which alone owns it from here: it
            // stays open, refers to the same pidfd and returns the same descriptor until the
            // AsyncFd drops it.
            let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(|e| ShimError::io(&paths.shim_state(), e.into()))?;
            let _ready = fd
                .readable()
                .await
                .map_err(|e| ShimError::io(&paths.shim_state(), e))?;
        }
    }
    read_exit(paths)?.ok_or_else(|| ShimError::Vanished {
        id: paths.id.clone(),
        pid: state.shim_pid,
        path: paths.exit(),
    })
}

/// Runs `berth-runtime --root R ARGS`; a failure carries the runtime's message.
async fn runtime(cfg: &ShimConfig, paths: &ShimPaths, args: &[&str]) -> Result<(), ShimError> {
    let out = tokio::process::Command::new(&cfg.runtime_binary)
        .arg("--root")
        .arg(&paths.runtime_root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| ShimError::io(&cfg.runtime_binary, e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(ShimError::Runtime {
        id: paths.id.clone(),
        command: args.join(" "),
        reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Stops the container: SIGTERM to its init, SIGKILL once `grace` has passed, and the exit
/// record once the shim is done.
pub async fn stop(
    cfg: &ShimConfig,
    paths: &ShimPaths,
    state: &ShimState,
    grace: Duration,
) -> Result<ExitRecord, ShimError> {
    let id = paths.id.as_str();
    let wait = wait_exit(paths, state);
    tokio::pin!(wait);
    if !is_alive(state) {
        return wait.await;
    }
    // A failure here mostly means init has just ended: the wait tells.
    if let Err(e) = runtime(cfg, paths, &["kill", id, "TERM"]).await {
        tracing::debug!("{e}");
    }
    if let Ok(done) = tokio::time::timeout(grace, &mut wait).await {
        return done;
    }
    if let Err(e) = runtime(cfg, paths, &["kill", id, "KILL"]).await {
        tracing::debug!("{e}");
    }
    tokio::time::timeout(KILL_TIMEOUT, &mut wait)
        .await
        .map_err(|_| ShimError::StopTimeout {
            id: id.to_string(),
            timeout: KILL_TIMEOUT,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::write(path, b"").unwrap();
    }

    #[test]
    fn binaries_are_found_beside_the_executable_first_then_on_path() {
        let tmp = tempfile::tempdir().unwrap();
        let (bin, on_path, other) = (
            tmp.path().join("bin"),
            tmp.path().join("path"),
            tmp.path().join("other"),
        );
        for d in [&bin, &on_path, &other] {
            std::fs::create_dir(d).unwrap();
        }
        let exe = bin.join("berth");
        touch(&bin.join("berth-shim"));
        touch(&on_path.join("berth-shim"));
        touch(&on_path.join("berth-runtime"));
        let search = std::env::join_paths([&other, &on_path]).unwrap();
        let cfg = ShimConfig::beside_or_on_path(&exe, &search).unwrap();
        assert_eq!(cfg.shim_binary, bin.join("berth-shim"));
        assert_eq!(cfg.runtime_binary, on_path.join("berth-runtime"));
        assert!(cfg.exit_command.is_empty());

        let err = ShimConfig::beside_or_on_path(&exe, &std::env::join_paths([&other]).unwrap())
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("berth-runtime"), "{text}");
        assert!(text.contains(&*exe.to_string_lossy()), "{text}");
        assert!(text.contains("PATH"), "{text}");
    }
}
