//! The agent's side of `berth-shim`: start one, find it again after a restart, wait for the
//! container's end and stop it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::{ExitRecord, ShimState};
use crate::layout::ContainerPaths;

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
    #[error("{what} not found at {path} (expected beside the agent's executable)")]
    BinaryMissing { what: &'static str, path: PathBuf },
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
}

impl ShimConfig {
    /// `berth-shim` and `berth-runtime` beside the current executable, with the default log
    /// limits; an error names the path looked at.
    pub fn beside_current_exe() -> Result<Self, ShimError> {
        let exe =
            std::env::current_exe().map_err(|e| ShimError::io(Path::new("/proc/self/exe"), e))?;
        let dir = exe.parent().unwrap_or(Path::new("/"));
        Self::in_dir(dir)
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
        Ok(ShimConfig {
            shim_binary: find("berth-shim")?,
            runtime_binary: find("berth-runtime")?,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            log_files: DEFAULT_LOG_FILES,
        })
    }
}

fn remove_stale(path: &Path) -> Result<(), ShimError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ShimError::io(path, e)),
        _ => Ok(()),
    }
}

/// Starts the shim for the bundle in `paths.dir` and returns once the container runs, with
/// the shim's reason when it does not. The shim is left running on its own (it survives the
/// agent); a task reaps it while this agent lives.
pub async fn start(cfg: &ShimConfig, paths: &ContainerPaths) -> Result<ShimState, ShimError> {
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
    let shim_log =
        std::fs::File::create(paths.shim_log()).map_err(|e| ShimError::io(&paths.shim_log(), e))?;
    let mut child = tokio::process::Command::new(&cfg.shim_binary)
        .arg("--id")
        .arg(id)
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
        .arg(cfg.log_files.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(shim_log))
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| ShimError::Spawn {
            id: id.clone(),
            path: cfg.shim_binary.clone(),
            source,
        })?;
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
            tokio::spawn(async move { child.wait().await });
            return Err(ShimError::Io {
                path: PathBuf::from(format!("{} (stdout)", cfg.shim_binary.display())),
                source: e,
            });
        }
        Ok(Ok(_)) => {}
    }
    let line = line.trim_end();
    if line.is_empty() {
        // It died before a word (a crash): its status says how, and shim.log why.
        let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(Ok(s)) => s.to_string(),
            _ => "still running".into(),
        };
        let detail = std::fs::read_to_string(paths.shim_log()).unwrap_or_default();
        let detail = detail.trim();
        return Err(ShimError::NoReport {
            id: id.clone(),
            status: if detail.is_empty() {
                status
            } else {
                format!("{status}: {}", detail.replace('\n', " "))
            },
        });
    }
    // Reaps the shim if it ends while this agent runs; kill_on_drop(false) keeps it alive
    // when the agent goes.
    tokio::spawn(async move { child.wait().await });
    if let Some(reason) = line.strip_prefix("error: ") {
        return Err(ShimError::Start {
            id: id.clone(),
            reason: reason.to_string(),
        });
    }
    let bad = || ShimError::BadReport {
        id: id.clone(),
        line: line.to_string(),
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
pub fn read_state(paths: &ContainerPaths) -> Result<Option<ShimState>, ShimError> {
    read_json(&paths.shim_state())
}

/// `exit.json`, if the container has ended.
pub fn read_exit(paths: &ContainerPaths) -> Result<Option<ExitRecord>, ShimError> {
    read_json(&paths.exit())
}

/// Whether a shim holds the container's lock: it runs, even if it has not written shim.json
/// yet (an agent that died while starting it).
pub fn lock_held(paths: &ContainerPaths) -> bool {
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
    berth_runtime::sys::proc_stat::is_alive(state.shim_pid as i32, state.shim_start_time)
}

/// Waits for the shim of `state` to end and returns `exit.json`. Works whether the shim is
/// this process's child or one found again after an agent restart (it waits on a pidfd,
/// which becomes readable when the process exits, whoever its parent is).
pub async fn wait_exit(paths: &ContainerPaths, state: &ShimState) -> Result<ExitRecord, ShimError> {
    let pidfd = berth_runtime::sys::pidfd::open(state.shim_pid as i32)
        .map_err(|e| ShimError::io(Path::new(&format!("pidfd_open({})", state.shim_pid)), e))?;
    if let Some(fd) = pidfd {
        // Checked after opening: the pidfd pins this very process, so a matching start time
        // means it is the shim and no pid reuse can swap it from here on.
        if berth_runtime::sys::proc_stat::read(state.shim_pid as i32)
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
async fn runtime(cfg: &ShimConfig, paths: &ContainerPaths, args: &[&str]) -> Result<(), ShimError> {
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
    paths: &ContainerPaths,
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
