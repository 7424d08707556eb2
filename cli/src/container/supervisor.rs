//! `run -d`: a supervisor process (double fork and setsid, as conmon) that creates and starts
//! the container as its own child, keeps its output in a size-capped log, waits for it,
//! records the exit code and, with `--rm`, removes it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context as _, bail};
use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, pipe2, setsid};

use super::layout::{ExitRecord, Meta, Paths, write_json};
use super::setup::Guard;

/// Each log file's cap; the previous part is kept as ctr.log.1, so at most twice this.
pub const LOG_CAP: u64 = 1 << 20;

const READY: &str = "ok";

/// Starts the supervisor and returns once the container runs (or failed to start, with the
/// supervisor's reason). The guard's cleanup passes to the supervisor.
pub fn spawn(paths: &Paths, meta: &Meta, guard: Guard) -> anyhow::Result<()> {
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: `berth` is single-threaded here; the child only runs this crate's code and
    // ends with _exit.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { child } => {
            drop(ready_w);
            let _ = waitpid(child, None);
            let mut reply = String::new();
            let _ = File::from(ready_r).read_to_string(&mut reply);
            if reply == READY {
                let _ = guard.disarm();
                return Ok(());
            }
            if reply.is_empty() {
                // The supervisor died without a word: the cleanup is ours.
                drop(guard);
                bail!("the supervisor of {} exited during start", paths.id);
            }
            // It failed and has cleaned up already.
            let _ = guard.disarm();
            bail!("{reply}")
        }
        ForkResult::Child => {
            drop(ready_r);
            let _ = setsid();
            // SAFETY: as above; this process is single-threaded.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    let code = supervise(paths, meta, guard, ready_w);
                    // SAFETY: _exit ends the process without running parent-owned destructors.
                    unsafe { libc::_exit(code) }
                }
                // SAFETY: as above.
                _ => unsafe { libc::_exit(0) },
            }
        }
    }
}

fn supervise(paths: &Paths, meta: &Meta, guard: Guard, ready: OwnedFd) -> i32 {
    let mut ready = File::from(ready);
    let started = start(paths, meta);
    let (pid, log_r) = match started {
        Ok(ok) => ok,
        Err(e) => {
            drop(guard);
            let _ = ready.write_all(crate::chain(&e).as_bytes());
            return 1;
        }
    };
    let _ = ready.write_all(READY.as_bytes());
    drop(ready);
    if let Err(e) = copy_log(paths, log_r) {
        tracing::warn!("logging {}: {e:#}", paths.id);
    }
    let code = loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(status) => break berth_runtime::container::exit_code(status),
            Err(_) => break 255,
        }
    };
    let _ = berth_runtime::delete(&paths.runtime_root, &paths.id, true);
    let _ = write_json(
        &paths.exit(),
        &ExitRecord {
            exit_code: code,
            finished: berth_runtime::state::rfc3339_now(),
        },
    );
    if meta.remove {
        drop(guard);
    } else {
        let _ = guard.disarm();
    }
    0
}

/// Creates and starts the container with stdout and stderr on a pipe; returns init's pid
/// and the pipe's read end. Only the container keeps the write end.
fn start(paths: &Paths, meta: &Meta) -> anyhow::Result<(nix::unistd::Pid, OwnedFd)> {
    let mut meta = meta.clone();
    meta.owner_pid = std::process::id() as i32;
    write_json(&paths.meta(), &meta)?;
    let devnull = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let (log_r, log_w) = pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    nix::unistd::dup2(devnull.as_raw_fd(), 0).context("dup2")?;
    nix::unistd::dup2(log_w.as_raw_fd(), 1).context("dup2")?;
    nix::unistd::dup2(log_w.as_raw_fd(), 2).context("dup2")?;
    drop(log_w);
    let created = berth_runtime::create(&berth_runtime::CreateOptions {
        root: paths.runtime_root.clone(),
        id: paths.id.clone(),
        bundle: paths.dir.clone(),
        pid_file: None,
        console_socket: None,
        no_pivot: false,
        preserve_fds: 0,
    });
    // The supervisor's own stdout and stderr go nowhere: no terminal after setsid, and the
    // log pipe must close when the container's processes are gone.
    let _ = nix::unistd::dup2(devnull.as_raw_fd(), 1);
    let _ = nix::unistd::dup2(devnull.as_raw_fd(), 2);
    let created = created?;
    berth_runtime::start(&paths.runtime_root, &paths.id)?;
    Ok((created.pid, log_r))
}

/// Appends the pipe's bytes to ctr.log until EOF, rotating it to ctr.log.1 at the cap.
fn copy_log(paths: &Paths, log_r: OwnedFd) -> anyhow::Result<()> {
    let mut pipe = File::from(log_r);
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths.log())
    };
    let mut log = open()?;
    let mut written = log.metadata()?.len();
    let mut buf = [0u8; 16384];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if written + n as u64 > LOG_CAP && written > 0 {
            fs::rename(paths.log(), paths.old_log())?;
            log = open()?;
            written = 0;
        }
        log.write_all(&buf[..n])?;
        written += n as u64;
    }
}
