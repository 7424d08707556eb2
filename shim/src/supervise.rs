//! The `berth-shim` process: one per container, like conmon.
//!
//! ```text
//! berth-shim --id ID --bundle DIR --runtime PATH --runtime-root DIR --dir CONTAINER_DIR
//!            --log-max-bytes N --log-files K [--exit-command PATH [--exit-command-arg ARG]...]
//! ```
//!
//! It starts a session, becomes a child subreaper and runs `berth-runtime create` with the
//! container's stdin on /dev/null and its stdout and stderr on a pipe, then `start`; the
//! container's init, forked by `create`, is re-parented to the shim when `create` exits. Its
//! stdout is the report pipe to the agent: `ok PID` once `shim.json` is written, or
//! `error: REASON` (after `delete --force`) and a non-zero exit.
//!
//! Then, single-threaded, it polls the log pipe and a signalfd for SIGCHLD: output goes to
//! `ctr.log` (rotated at `--log-max-bytes` into `ctr.log.1` .. keeping `--log-files` parts in
//! all), every child is reaped (orphans come here too), and when init ends it reads the
//! memory cgroup's OOM-kill count, drains the pipe (for at most [`DRAIN_DEADLINE`]), writes
//! `exit.json` and runs `delete --force`, then the exit command if one was given (as conmon's
//! `--exit-command`: `berth run -d --rm` removes the container's files with it).
//!
//! Dependencies are std, nix, libc and serde_json only: no threads, no async runtime, no
//! argument-parser, to keep its resident memory small.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::paths::ShimPaths;
use crate::{ExitRecord, ShimState};

/// How long the shim keeps copying output after init has ended: processes that escaped the
/// container's pid namespace (or a container without one) may hold the pipe open.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// The read size for the log pipe.
const BUF_SIZE: usize = 16 * 1024;

/// The shim's command line.
#[derive(Debug, Clone)]
pub struct Args {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub dir: PathBuf,
    /// Each log part's cap in bytes (0: no rotation).
    pub log_max_bytes: u64,
    /// How many log parts to keep in all, ctr.log included (at least 1).
    pub log_files: u32,
    /// Run once the container is deleted: the program and its arguments (empty: none).
    pub exit_command: Vec<OsString>,
    /// `--cgroup-driver systemd`: the runtime is called with `--systemd-cgroup`, as conmon
    /// passes podman's choice on (default cgroupfs).
    pub systemd_cgroup: bool,
}

impl Args {
    /// Parses `--flag VALUE` or `--flag=VALUE` pairs; every flag is required.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
        let mut id = None;
        let mut bundle = None;
        let mut runtime = None;
        let mut runtime_root = None;
        let mut dir = None;
        let mut log_max_bytes = None;
        let mut log_files = None;
        let mut exit_command = Vec::new();
        let mut exit_args = Vec::new();
        let mut systemd_cgroup = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let bytes = arg.as_bytes();
            let (flag, value) = match bytes.iter().position(|&b| b == b'=') {
                Some(eq) if bytes.starts_with(b"--") => (
                    String::from_utf8_lossy(&bytes[..eq]).into_owned(),
                    OsString::from(std::ffi::OsStr::from_bytes(&bytes[eq + 1..])),
                ),
                _ => {
                    let flag = arg.to_string_lossy().into_owned();
                    let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
                    (flag, value)
                }
            };
            let number = |v: &OsString| -> Result<u64, String> {
                v.to_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("{flag}: not a number: {}", v.to_string_lossy()))
            };
            match flag.as_str() {
                "--id" => id = Some(value.to_string_lossy().into_owned()),
                "--bundle" => bundle = Some(PathBuf::from(value)),
                "--runtime" => runtime = Some(PathBuf::from(value)),
                "--runtime-root" => runtime_root = Some(PathBuf::from(value)),
                "--dir" => dir = Some(PathBuf::from(value)),
                "--log-max-bytes" => log_max_bytes = Some(number(&value)?),
                "--log-files" => {
                    let n = number(&value)?;
                    log_files = Some(u32::try_from(n.max(1)).map_err(|_| "--log-files: too large")?)
                }
                "--exit-command" => exit_command = vec![value],
                "--exit-command-arg" => exit_args.push(value),
                "--cgroup-driver" => {
                    systemd_cgroup = match value.to_str() {
                        Some("systemd") => true,
                        Some("cgroupfs") => false,
                        _ => {
                            return Err(format!(
                                "--cgroup-driver: expected systemd or cgroupfs, got {}",
                                value.to_string_lossy()
                            ));
                        }
                    }
                }
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if exit_command.is_empty() && !exit_args.is_empty() {
            return Err("--exit-command-arg needs --exit-command".into());
        }
        exit_command.extend(exit_args);
        let missing = |name: &str| format!("{name} is required");
        Ok(Args {
            id: id.ok_or_else(|| missing("--id"))?,
            bundle: bundle.ok_or_else(|| missing("--bundle"))?,
            runtime: runtime.ok_or_else(|| missing("--runtime"))?,
            runtime_root: runtime_root.ok_or_else(|| missing("--runtime-root"))?,
            dir: dir.ok_or_else(|| missing("--dir"))?,
            log_max_bytes: log_max_bytes.ok_or_else(|| missing("--log-max-bytes"))?,
            log_files: log_files.ok_or_else(|| missing("--log-files"))?,
            exit_command,
            systemd_cgroup,
        })
    }

    /// The container's files: its directory and the runtime's root.
    fn paths(&self) -> ShimPaths {
        ShimPaths {
            id: self.id.clone(),
            dir: self.dir.clone(),
            runtime_root: self.runtime_root.clone(),
        }
    }
}

/// The binary's entry point: returns the process's exit code.
pub fn main() -> i32 {
    let args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            report(&format!("error: {e}"));
            return 2;
        }
    };
    run(&args)
}

/// Writes one line on the report pipe (stdout) and closes it: /dev/null takes fd 1, so the
/// agent sees end-of-file and nothing later can block on a pipe nobody reads.
fn report(line: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(line.replace('\n', " ").as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// The shim's life: start the container, then supervise it.
pub fn run(args: &Args) -> i32 {
    let paths = args.paths();
    let signals = match setup() {
        Ok(s) => s,
        Err(e) => {
            report(&format!("error: shim setup: {e}"));
            return 1;
        }
    };
    // Held (and never closed) for the shim's whole life.
    let _lock = match lock(&paths) {
        Ok(lock) => lock,
        Err(reason) => {
            report(&format!("error: {reason}"));
            return 1;
        }
    };
    let (pid, log_r) = match start(args, &paths) {
        Ok(started) => started,
        Err(reason) => {
            report(&format!("error: {reason}"));
            let _ = runtime(args, &paths, &["delete", "--force", &args.id]);
            return 1;
        }
    };
    let state = ShimState {
        shim_pid: std::process::id(),
        shim_start_time: berth_runtime::sys::proc_stat::read_self().map_or(0, |s| s.start_time),
        // A pid read from the pid file is positive (checked in `start`).
        container_pid: pid.as_raw().unsigned_abs(),
        started_at_ms: berth_runtime::sys::time::now_ms(),
    };
    if let Err(e) = write_json_atomic(&paths.shim_state(), &state) {
        report(&format!(
            "error: writing {}: {e}",
            paths.shim_state().display()
        ));
        let _ = runtime(args, &paths, &["kill", &args.id, "KILL"]);
        let _ = runtime(args, &paths, &["delete", "--force", &args.id]);
        return 1;
    }
    report(&format!("ok {}", pid.as_raw()));
    release_startup_pages();

    let log = LogWriter::open(&paths, args.log_max_bytes, args.log_files);
    let (status, oom_killed) = supervise(args, pid, log_r, &signals, log);
    let record = ExitRecord {
        exit_code: status,
        oom_killed,
        finished_at_ms: berth_runtime::sys::time::now_ms(),
    };
    if let Err(e) = write_json_atomic(&paths.exit(), &record) {
        eprintln!("berth-shim {}: writing exit.json: {e}", args.id);
    }
    if let Err(e) = runtime(args, &paths, &["delete", "--force", &args.id]) {
        eprintln!("berth-shim {}: delete: {e}", args.id);
    }
    run_exit_command(args);
    reap_all(None);
    0
}

/// Runs `--exit-command` (if any) to its end, with stdin and stdout on /dev/null and stderr on
/// the shim's own.
fn run_exit_command(args: &Args) {
    let Some((program, rest)) = args.exit_command.split_first() else {
        return;
    };
    let status = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("berth-shim {}: exit command: {s}", args.id),
        Err(e) => eprintln!(
            "berth-shim {}: exit command {}: {e}",
            args.id,
            Path::new(program).display()
        ),
    }
}

/// Inherited descriptors closed, session leader, child subreaper, stdin on /dev/null; SIGCHLD and SIGHUP blocked and read
/// from a signalfd (blocked rather than ignored: an ignored signal would stay ignored in the
/// runtime and the container, while std's Command clears the mask for them).
fn setup() -> io::Result<SignalFd> {
    // Nothing the agent left open without close-on-exec may reach the runtime or the
    // container.
    // Descriptors from 3 up are closed before this process opens any of its own (std holds
    // none of them); a failure leaves them open, as it always has.
    let _ = berth_runtime::sys::fd::close_range(3, berth_runtime::sys::fd::CloseMode::Close);
    // Fails only when already a group leader, which a spawned child is not.
    let _ = nix::unistd::setsid();
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes one integer argument and touches no memory
    // of ours.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: replaces SIGPIPE's disposition with SIG_IGN; no handler function is involved.
    // (std has usually done so already; writes to a closed pipe then fail with EPIPE.)
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let null = File::open("/dev/null")?;
    nix::unistd::dup2(null.as_raw_fd(), 0)?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGHUP);
    mask.thread_block()?;
    Ok(SignalFd::with_flags(
        &mask,
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )?)
}

/// Drops this process's page-table entries for read-only file mappings (program and library
/// code and constants) that hold no private copies: the start-up path (spawning the runtime,
/// JSON, formatting) faulted in far more of them than the copy loop uses, and they would
/// count in the shim's RSS for the container's whole life. The pages stay in the page cache;
/// what the loop needs faults back in. Only mappings with no anonymous (copied-on-write)
/// pages and no write permission qualify, so no content can be lost.
fn release_startup_pages() {
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            // "start-end perms offset dev inode path": a file-backed, private, read-only one.
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            current = (perms.starts_with('r')
                && perms.as_bytes().get(1) == Some(&b'-')
                && perms.ends_with('p')
                && path.starts_with('/'))
            .then_some((start, end));
        } else if first == "Anonymous:"
            && let Some((start, end)) = current.take()
            && fields.next() == Some("0")
        {
            // SAFETY: [start, end) is a whole mapping of this process, private, not writable,
            // file-backed and with no anonymous pages: MADV_DONTNEED only unmaps pages that
            // are re-read from the file on the next access. No Rust object lives in it.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

/// `create` and `start`: init's pid and the log pipe's read end, or the one-line reason.
fn start(args: &Args, paths: &ShimPaths) -> Result<(Pid, OwnedFd), String> {
    // A fresh runtime log per shim: the reason of a failure is its last error record.
    let _ = File::create(paths.runtime_log());
    let _ = fs::remove_file(paths.pid_file());
    let (log_r, log_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("log pipe: {e}"))?;
    let log_w2 = log_w.try_clone().map_err(|e| format!("log pipe: {e}"))?;
    let bundle = args.bundle.as_os_str().to_string_lossy();
    let pid_file = paths.pid_file();
    let pid_file = pid_file.to_string_lossy();
    let mut create = runtime_command(args, paths);
    create
        .args([
            "create",
            "--bundle",
            &bundle,
            "--pid-file",
            &pid_file,
            &args.id,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_w))
        .stderr(Stdio::from(log_w2));
    // The Command (and with it the shim's copies of the write end) is dropped at the end of
    // this statement: then only the container holds the pipe.
    let status = create.status();
    drop(create);
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(format!("create: {}", runtime_error(paths, s))),
        Err(e) => {
            return Err(format!("create: running {}: {e}", args.runtime.display()));
        }
    }
    let pid = fs::read_to_string(paths.pid_file())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("create: no pid in {}", paths.pid_file().display()))?;
    runtime(args, paths, &["start", &args.id]).map_err(|e| format!("start: {e}"))?;
    Ok((Pid::from_raw(pid), log_r))
}

fn runtime_command(args: &Args, paths: &ShimPaths) -> Command {
    let mut cmd = Command::new(&args.runtime);
    cmd.arg("--root")
        .arg(&args.runtime_root)
        .arg("--log")
        .arg(paths.runtime_log())
        .args(["--log-format", "json"]);
    if args.systemd_cgroup {
        cmd.arg("--systemd-cgroup");
    }
    cmd
}

/// Runs one runtime command with no stdio; the error carries the runtime's reason.
fn runtime(args: &Args, paths: &ShimPaths, argv: &[&str]) -> Result<(), String> {
    let status = runtime_command(args, paths)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", args.runtime.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(runtime_error(paths, status))
    }
}

/// The last error record in runtime.log, or the exit status.
fn runtime_error(paths: &ShimPaths, status: std::process::ExitStatus) -> String {
    let text = fs::read_to_string(paths.runtime_log()).unwrap_or_default();
    let mut last = None;
    for line in text.lines() {
        let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if record.get("level").and_then(|l| l.as_str()) == Some("error")
            && let Some(msg) = record.get("msg").and_then(|m| m.as_str())
        {
            last = Some(msg.to_string());
        }
    }
    match last {
        Some(msg) => msg.replace('\n', " "),
        None => format!("the runtime failed ({status})"),
    }
}

/// Copies the pipe to the log and reaps children until init has ended and the pipe is
/// drained (or the drain deadline passed). Returns init's exit code and the OOM verdict.
fn supervise(
    args: &Args,
    pid: Pid,
    log_r: OwnedFd,
    signals: &SignalFd,
    mut log: LogWriter,
) -> (i32, bool) {
    let mut pipe = Some(File::from(log_r));
    let mut status = None;
    let mut oom = false;
    let mut deadline: Option<Instant> = None;
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        if status.is_none() {
            status = reap_all(Some(pid));
            if status.is_some() {
                // Before delete removes the cgroup with its counters.
                oom = oom_killed(&args.bundle, &args.id, args.systemd_cgroup);
                deadline = Some(Instant::now() + DRAIN_DEADLINE);
            }
        } else {
            reap_all(None);
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if pipe.is_none() || left.is_zero() {
                    break;
                }
                // At most a minute: always fits.
                let ms = u16::try_from(left.as_millis().clamp(1, 60_000)).unwrap_or(u16::MAX);
                PollTimeout::from(ms)
            }
        };
        let (pipe_ready, sig_ready) = {
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            if let Some(p) = &pipe {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("berth-shim {}: poll: {e}", args.id);
                    // Nothing to wait on: fall back to blocking on init.
                    return (
                        wait_blocking(pid),
                        oom_killed(&args.bundle, &args.id, args.systemd_cgroup),
                    );
                }
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            (fds.get(1).is_some_and(ready), ready(&fds[0]))
        };
        if sig_ready {
            // Drain the pending signals; SIGCHLD's are reaped at the top of the loop.
            while let Ok(Some(_)) = signals.read_signal() {}
        }
        if pipe_ready && let Some(p) = pipe.as_mut() {
            match p.read(&mut buf) {
                Ok(0) => pipe = None,
                Ok(n) => log.write(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("berth-shim {}: reading the log pipe: {e}", args.id);
                    pipe = None;
                }
            }
        }
    }
    (status.unwrap_or(255), oom)
}

/// Reaps every exited child without blocking; returns the exit code of `watch` if it was one.
fn reap_all(watch: Option<Pid>) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return code,
            Ok(status) => {
                if status.pid().is_some() && status.pid() == watch {
                    code = exit_code(status).or(code);
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => return code,
        }
    }
}

fn wait_blocking(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => {}
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    return code;
                }
            }
            Err(_) => return 255,
        }
    }
}

/// The code of an ended process: its exit status, or 128+N for signal N.
fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Writes JSON crash-safely ([`berth_runtime::sys::fs::atomic_write`]).
fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    berth_runtime::sys::fs::atomic_write(path, &bytes)
}

/// Whether the OOM killer acted in the container's memory cgroup (`linux.cgroupsPath` of the
/// bundle's config.json), on cgroup v1 or cgroup2 ([`berth_runtime::sys::oom::oom_kills`]).
pub fn oom_killed(bundle: &Path, id: &str, systemd_cgroup: bool) -> bool {
    cgroup_path(bundle, id, systemd_cgroup)
        .is_some_and(|cgroup| berth_runtime::sys::oom::oom_kills(Path::new(&cgroup)) > 0)
}

/// The container's cgroup path from the root of a hierarchy, as the runtime places it: the
/// systemd unit's directory for a `slice:prefix:name` path (with `--systemd-cgroup`), the
/// absolute `cgroupsPath`, a relative one under the runtime's (the shim's) own cgroup, or
/// `/berth-ID` without one.
fn cgroup_path(bundle: &Path, id: &str, systemd_cgroup: bool) -> Option<String> {
    let config = fs::read(bundle.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_slice(&config).ok()?;
    let path = config
        .pointer("/linux/cgroupsPath")
        .and_then(|p| p.as_str())
        .unwrap_or("");
    if systemd_cgroup {
        let unit = berth_runtime::cgroup_driver::SystemdUnit::from_cgroups_path(path, id).ok()?;
        return Some(unit.cgroup_path().ok()?.to_string_lossy().into_owned());
    }
    if path.is_empty() {
        return Some(format!("/berth-{id}"));
    }
    if path.starts_with('/') {
        return Some(path.to_string());
    }
    // Relative: under this process's memory cgroup (v1), or its unified one (v2).
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let base = own
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let memory = controllers.split(',').any(|c| c == "memory");
            (memory || controllers.is_empty()).then(|| (memory, path.to_string()))
        })
        .max_by_key(|(memory, _)| *memory)?
        .1;
    Some(format!("{}/{path}", base.trim_end_matches('/')))
}

/// ctr.log with size-capped parts: ctr.log -> ctr.log.1 -> ... -> ctr.log.(K-1), the oldest
/// deleted. A part ends at a line boundary when a newline fits, and is cut at the cap when a
/// line alone is longer. Write errors are reported once and the output dropped, so the
/// container never blocks on a full disk.
#[derive(Debug)]
struct LogWriter {
    paths: ShimPaths,
    file: Option<File>,
    written: u64,
    max: u64,
    files: u32,
    failed: bool,
}

impl LogWriter {
    fn open(paths: &ShimPaths, max: u64, files: u32) -> Self {
        let mut log = LogWriter {
            paths: paths.clone(),
            file: None,
            written: 0,
            max,
            files: files.max(1),
            failed: false,
        };
        log.reopen();
        log
    }

    fn reopen(&mut self) {
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.paths.log())
        {
            Ok(f) => {
                self.written = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(f);
            }
            Err(e) => {
                self.fail(&e);
                self.file = None;
            }
        }
    }

    fn fail(&mut self, e: &io::Error) {
        if !self.failed {
            eprintln!(
                "berth-shim {}: {}: {e}",
                self.paths.id,
                self.paths.log().display()
            );
            self.failed = true;
        }
    }

    fn write(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            let take = if self.max == 0 {
                buf.len()
            } else {
                // Beyond usize, more room than any buffer needs.
                let room =
                    usize::try_from(self.max.saturating_sub(self.written)).unwrap_or(usize::MAX);
                if buf.len() <= room {
                    buf.len()
                } else if let Some(nl) = buf[..room].iter().rposition(|&b| b == b'\n') {
                    nl + 1
                } else if self.written == 0 {
                    room
                } else {
                    0
                }
            };
            if take > 0 {
                if let Some(f) = self.file.as_mut()
                    && let Err(e) = f.write_all(&buf[..take])
                {
                    self.fail(&e);
                }
                self.written += u64::try_from(take).unwrap_or(u64::MAX);
                buf = &buf[take..];
            }
            if !buf.is_empty() {
                self.rotate();
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        if self.files <= 1 {
            let _ = fs::remove_file(self.paths.log());
        } else {
            let _ = fs::remove_file(self.paths.old_log(self.files - 1));
            for n in (1..self.files - 1).rev() {
                let _ = fs::rename(self.paths.old_log(n), self.paths.old_log(n + 1));
            }
            if let Err(e) = fs::rename(self.paths.log(), self.paths.old_log(1))
                && e.kind() != io::ErrorKind::NotFound
            {
                self.fail(&e);
            }
        }
        self.reopen();
    }
}

/// Takes the container's shim lock, or says which shim holds it.
fn lock(paths: &ShimPaths) -> Result<nix::fcntl::Flock<File>, String> {
    let path = paths.shim_lock();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == Errno::EWOULDBLOCK {
            format!("another shim already runs container {}", paths.id)
        } else {
            format!("locking {}: {e}", path.display())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> ShimPaths {
        ShimPaths {
            id: "t".into(),
            dir: dir.to_path_buf(),
            runtime_root: PathBuf::new(),
        }
    }

    #[test]
    fn parses_flags() {
        let argv = [
            "--id",
            "c1",
            "--bundle=/b",
            "--runtime",
            "/r",
            "--runtime-root",
            "/rr",
            "--dir",
            "/d",
            "--log-max-bytes",
            "100",
            "--log-files=3",
        ];
        let args = Args::parse(argv.iter().map(OsString::from)).unwrap();
        assert_eq!(args.id, "c1");
        assert_eq!(args.bundle, Path::new("/b"));
        assert_eq!(args.log_max_bytes, 100);
        assert_eq!(args.log_files, 3);
        let err = Args::parse(["--id", "x"].iter().map(OsString::from)).unwrap_err();
        assert!(err.contains("required"), "{err}");
        let err = Args::parse(["--bogus", "x"].iter().map(OsString::from)).unwrap_err();
        assert!(err.contains("--bogus"), "{err}");
        assert!(args.exit_command.is_empty());
        let with_exit = |extra: &[&str]| {
            Args::parse(argv.iter().chain(extra).map(OsString::from))
                .map(|a| a.exit_command.clone())
        };
        let exit = with_exit(&[
            "--exit-command",
            "/bin/berth",
            "--exit-command-arg",
            "rm",
            "--exit-command-arg=c1",
        ]);
        assert_eq!(
            exit.unwrap(),
            ["/bin/berth", "rm", "c1"].map(OsString::from).to_vec()
        );
        let err = with_exit(&["--exit-command-arg", "rm"]).unwrap_err();
        assert!(err.contains("--exit-command"), "{err}");
    }

    #[test]
    fn rotation_keeps_parts_at_line_boundaries() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        let mut log = LogWriter::open(&p, 10, 3);
        log.write(b"aaaa\nbbbb\ncccc\n");
        log.write(b"0123456789012345\n");
        log.write(b"dd\n");
        let read = |path: PathBuf| fs::read_to_string(path).unwrap_or_default();
        // "aaaa\nbbbb\n" | "cccc\n" | "0123456789" | "012345\n" "dd\n": the last three kept.
        assert_eq!(read(p.old_log(2)), "cccc\n");
        assert_eq!(read(p.old_log(1)), "0123456789");
        assert_eq!(read(p.log()), "012345\ndd\n");
        assert!(!p.old_log(3).exists());
    }

    #[test]
    fn single_part_truncates() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        let mut log = LogWriter::open(&p, 8, 1);
        log.write(b"one\ntwo\nthree\n");
        assert_eq!(fs::read_to_string(p.log()).unwrap(), "three\n");
        assert!(!p.old_log(1).exists());
    }
}
