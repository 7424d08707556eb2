//! Container health probes (readiness and liveness), Kubernetes-like.
//!
//! * [`check`] runs one probe attempt against a container ([`ProbeTarget`]) and returns an
//!   [`Outcome`]:
//!   - exec: `RUNTIME --root ROOT exec ID CMD...` (the runc-compatible berth-runtime), exit
//!     code 0 succeeds; killed when the probe timeout expires;
//!   - tcp: a TCP connect to `ip:port` succeeds;
//!   - http: `GET path` over HTTP/1.1 to `ip:port`; a status in `200..=399` succeeds.
//!
//!   tcp and http connect from inside the container's network namespace when
//!   [`ProbeTarget::netns`] is set: the connection is made on a fresh OS thread that
//!   `setns(2)`s into the namespace and exits afterwards, so no tokio thread ever changes
//!   namespace.
//! * [`ProbeState`] turns a stream of outcomes into a passing/failing state with the probe's
//!   success and failure thresholds.
//! * [`schedule`] gives the probe's initial delay, period and timeout with defaults applied.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proto::v1::Probe;
use berth_proto::v1::probe::Check;
use nix::sched::CloneFlags;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Period used when the probe's `period_ms` is 0.
pub(crate) const DEFAULT_PERIOD: Duration = Duration::from_millis(1000);
/// Timeout used when the probe's `timeout_ms` is 0.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Failure threshold used when the probe's `failure_threshold` is 0.
pub(crate) const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Success threshold used when the probe's `success_threshold` is 0.
pub(crate) const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// How much of an exec probe's output (the end of it) is kept for the failure message.
pub(crate) const OUTPUT_TAIL_BYTES: usize = 1024;

/// After an exec probe's runtime process exits, how long its output pipes may stay open
/// (held by a lingering child) before the output read so far is used.
const PIPE_GRACE: Duration = Duration::from_millis(100);
/// Extra time given to a tcp/http probe thread beyond the probe timeout before the probe
/// stops waiting for it (its socket operations all have timeouts, so it ends by itself).
const THREAD_GRACE: Duration = Duration::from_millis(500);
/// Longest HTTP status line read.
const MAX_STATUS_LINE: usize = 1024;

/// The container a probe runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeTarget {
    /// The container's id in the runtime (for exec probes).
    pub container_id: String,
    /// The berth-runtime (runc-compatible) binary used for exec probes.
    pub runtime_binary: PathBuf,
    /// The runtime's state directory, passed as `--root`.
    pub runtime_root: PathBuf,
    /// The container's IPv4 address, for tcp and http probes.
    pub ip: Option<Ipv4Addr>,
    /// The container's network namespace (e.g. `/proc/PID/ns/net` or `/run/netns/NAME`);
    /// when set, tcp and http probes connect from inside it.
    pub netns: Option<PathBuf>,
}

/// The result of one probe attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The check passed.
    Success,
    /// The check failed; the message names what failed and why, e.g.
    /// `"tcp 10.88.0.5:8080: connection refused"`.
    Failure(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => f.write_str("success"),
            Outcome::Failure(msg) => f.write_str(msg),
        }
    }
}

/// `(initial_delay, period, timeout)` of a probe; period and timeout default to 1000 ms
/// when 0, the initial delay may be 0.
pub(crate) fn schedule(probe: &Probe) -> (Duration, Duration, Duration) {
    let ms_or = |ms: u32, default: Duration| {
        if ms == 0 {
            default
        } else {
            Duration::from_millis(ms.into())
        }
    };
    (
        Duration::from_millis(probe.initial_delay_ms.into()),
        ms_or(probe.period_ms, DEFAULT_PERIOD),
        ms_or(probe.timeout_ms, DEFAULT_TIMEOUT),
    )
}

/// `(success_threshold, failure_threshold)` of a probe, defaults (1, 3) applied for 0.
pub(crate) fn thresholds(probe: &Probe) -> (u32, u32) {
    let or = |v: u32, default: u32| if v == 0 { default } else { v };
    (
        or(probe.success_threshold, DEFAULT_SUCCESS_THRESHOLD),
        or(probe.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
    )
}

/// Passing/failing state of one probe over consecutive outcomes.
///
/// A passing probe turns failing after `failure_threshold` consecutive failures; a failing
/// one turns passing after `success_threshold` consecutive successes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeState {
    passing: bool,
    successes: u32,
    failures: u32,
    success_threshold: u32,
    failure_threshold: u32,
    last_failure: Option<String>,
}

impl ProbeState {
    /// State for `probe`, starting as `initially_passing` (readiness probes start not
    /// passing, liveness probes start passing).
    pub(crate) fn new(probe: &Probe, initially_passing: bool) -> Self {
        let (success_threshold, failure_threshold) = thresholds(probe);
        Self {
            passing: initially_passing,
            successes: 0,
            failures: 0,
            success_threshold,
            failure_threshold,
            last_failure: None,
        }
    }

    /// A readiness probe's state: not passing until it has succeeded.
    pub(crate) fn readiness(probe: &Probe) -> Self {
        Self::new(probe, false)
    }

    /// A liveness probe's state: passing until it has failed enough times.
    pub(crate) fn liveness(probe: &Probe) -> Self {
        Self::new(probe, true)
    }

    /// Whether the probe currently counts as passing.
    #[cfg(test)] // observed by the tests; the worker acts on what observe() returns
    pub(crate) fn passing(&self) -> bool {
        self.passing
    }

    /// Consecutive successes observed (0 after a failure).
    #[cfg(test)] // observed by the tests; the worker acts on what observe() returns
    pub(crate) fn consecutive_successes(&self) -> u32 {
        self.successes
    }

    /// Consecutive failures observed (0 after a success).
    #[cfg(test)] // observed by the tests; the worker acts on what observe() returns
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// The message of the most recent failure, cleared by the next success.
    #[cfg(test)] // observed by the tests; the worker acts on what observe() returns
    pub(crate) fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// Record one outcome; returns `Some(new_passing)` when the passing state changes.
    pub(crate) fn observe(&mut self, outcome: &Outcome) -> Option<bool> {
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.last_failure = None;
                self.successes = self.successes.saturating_add(1);
                if !self.passing && self.successes >= self.success_threshold {
                    self.passing = true;
                    return Some(true);
                }
            }
            Outcome::Failure(msg) => {
                self.successes = 0;
                self.last_failure = Some(msg.clone());
                self.failures = self.failures.saturating_add(1);
                if self.passing && self.failures >= self.failure_threshold {
                    self.passing = false;
                    return Some(false);
                }
            }
        }
        None
    }
}

/// Run one attempt of `probe` against `target`, bounded by the probe's timeout.
pub(crate) async fn check(probe: &Probe, target: &ProbeTarget) -> Outcome {
    let (_, _, timeout) = schedule(probe);
    match &probe.check {
        None => Outcome::Failure("probe has no check configured".to_owned()),
        Some(Check::Exec(exec)) => check_exec(&exec.command, target, timeout).await,
        Some(Check::Tcp(tcp)) => {
            let what = match target.ip {
                Some(ip) => format!("tcp {ip}:{}", tcp.port),
                None => format!("tcp port {}", tcp.port),
            };
            net_check(what, NetCheck::Tcp, tcp.port, target, timeout).await
        }
        Some(Check::Http(http)) => {
            let path = if http.path.is_empty() {
                "/".to_owned()
            } else if http.path.starts_with('/') {
                http.path.clone()
            } else {
                format!("/{}", http.path)
            };
            let what = match target.ip {
                Some(ip) => format!("http GET {path} on {ip}:{}", http.port),
                None => format!("http GET {path} on port {}", http.port),
            };
            if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Outcome::Failure(format!(
                    "{what}: path contains whitespace or control characters"
                ));
            }
            net_check(what, NetCheck::Http { path }, http.port, target, timeout).await
        }
    }
}

// ---------------------------------------------------------------------------------------
// exec

/// The last `cap` bytes of a stream.
#[derive(Debug)]
struct Tail {
    buf: Vec<u8>,
    cap: usize,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > self.cap {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
        }
    }
}

async fn read_tail(mut reader: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&chunk[..n]),
        }
    }
}

/// Combined stdout then stderr tails, trimmed, lossily decoded, at most
/// [`OUTPUT_TAIL_BYTES`] (the end of it).
fn output_tail(stdout: &Mutex<Tail>, stderr: &Mutex<Tail>) -> String {
    let take = |t: &Mutex<Tail>| {
        let t = t.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&t.buf).trim().to_owned()
    };
    let (out, err) = (take(stdout), take(stderr));
    let joined = match (out.is_empty(), err.is_empty()) {
        (_, true) => out,
        (true, false) => err,
        (false, false) => format!("{out}\n{err}"),
    };
    if joined.len() <= OUTPUT_TAIL_BYTES {
        return joined;
    }
    let mut start = joined.len() - OUTPUT_TAIL_BYTES;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    joined[start..].to_owned()
}

fn with_output(msg: String, output: &str) -> String {
    if output.is_empty() {
        msg
    } else {
        format!("{msg}: {output}")
    }
}

async fn check_exec(command: &[String], target: &ProbeTarget, timeout: Duration) -> Outcome {
    if command.is_empty() {
        return Outcome::Failure("exec probe has no command".to_owned());
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut cmd = tokio::process::Command::new(&target.runtime_binary);
    cmd.arg("--root")
        .arg(&target.runtime_root)
        .arg("exec")
        .arg(&target.container_id)
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Outcome::Failure(format!(
                "exec: starting {}: {e}",
                target.runtime_binary.display()
            ));
        }
    };

    let stdout = Arc::new(Mutex::new(Tail::new(OUTPUT_TAIL_BYTES)));
    let stderr = Arc::new(Mutex::new(Tail::new(OUTPUT_TAIL_BYTES)));
    let mut readers = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        readers.spawn(read_tail(out, stdout.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(read_tail(err, stderr.clone()));
    }

    let status = tokio::time::timeout_at(deadline, child.wait()).await;
    // Let the readers drain what is left, but not past the deadline and not for long if
    // a lingering process keeps the pipes open.
    let drain_until = deadline.min(tokio::time::Instant::now() + PIPE_GRACE);
    let _ = tokio::time::timeout_at(drain_until, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    readers.abort_all();
    let output = output_tail(&stdout, &stderr);

    match status {
        Err(_elapsed) => {
            // kill_on_drop would do it too; be explicit and reap if we can.
            let _ = child.start_kill();
            let _ = child.try_wait();
            Outcome::Failure(with_output(
                format!("exec timed out after {}ms", timeout.as_millis()),
                &output,
            ))
        }
        Ok(Err(e)) => Outcome::Failure(format!("exec: waiting for the runtime: {e}")),
        Ok(Ok(status)) if status.success() => Outcome::Success,
        Ok(Ok(status)) => {
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exec exited {code}"),
                (None, Some(sig)) => format!("exec killed by signal {sig}"),
                (None, None) => format!("exec failed: {status}"),
            };
            Outcome::Failure(with_output(how, &output))
        }
    }
}

// ---------------------------------------------------------------------------------------
// tcp / http

#[derive(Debug, Clone)]
enum NetCheck {
    Tcp,
    Http { path: String },
}

async fn net_check(
    what: String,
    kind: NetCheck,
    port: u32,
    target: &ProbeTarget,
    timeout: Duration,
) -> Outcome {
    let Ok(port) = u16::try_from(port) else {
        return Outcome::Failure(format!("{what}: invalid port"));
    };
    if port == 0 {
        return Outcome::Failure(format!("{what}: invalid port"));
    }
    let Some(ip) = target.ip else {
        return Outcome::Failure(format!("{what}: container has no IP address"));
    };
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    // The sockets' own timeouts on the checking thread: real time, as the kernel keeps it.
    // The wait for that thread below is tokio's, so a paused clock still bounds the probe.
    let deadline = Instant::now() + timeout;

    let (tx, rx) = tokio::sync::oneshot::channel();
    match &target.netns {
        None => {
            // No namespace switch: the blocking pool is fine.
            tokio::task::spawn_blocking(move || {
                let _ = tx.send(blocking_check(&kind, addr, deadline, timeout));
            });
        }
        Some(netns) => {
            let netns = netns.clone();
            let spawned = std::thread::Builder::new()
                .name("berth-probe-netns".to_owned())
                .spawn(move || {
                    // This thread is ours alone and ends after the check, so the namespace
                    // change never leaks into a runtime thread.
                    let result = enter_netns(&netns)
                        .map(|()| blocking_check(&kind, addr, deadline, timeout))
                        .unwrap_or_else(|e| {
                            Err(format!(
                                "entering network namespace {}: {e}",
                                netns.display()
                            ))
                        });
                    let _ = tx.send(result);
                });
            if let Err(e) = spawned {
                return Outcome::Failure(format!("{what}: spawning probe thread: {e}"));
            }
        }
    }

    match tokio::time::timeout(timeout + THREAD_GRACE, rx).await {
        Ok(Ok(Ok(()))) => Outcome::Success,
        Ok(Ok(Err(msg))) => Outcome::Failure(format!("{what}: {msg}")),
        Ok(Err(_closed)) => Outcome::Failure(format!("{what}: probe thread failed")),
        Err(_elapsed) => {
            Outcome::Failure(format!("{what}: timed out after {}ms", timeout.as_millis()))
        }
    }
}

/// Move the calling thread into the network namespace at `path`. Only ever called on a
/// dedicated, short-lived thread.
fn enter_netns(path: &std::path::Path) -> nix::Result<()> {
    let file = File::open(path).map_err(|e| {
        e.raw_os_error()
            .map_or(nix::Error::EIO, nix::Error::from_raw)
    })?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
}

/// Time left until `deadline`, or a timeout error naming the probe timeout.
fn remaining(deadline: Instant, timeout: Duration) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(format!("timed out after {}ms", timeout.as_millis()))
    } else {
        Ok(left)
    }
}

fn describe_io(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("timed out after {}ms", timeout.as_millis())
        }
        io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        _ => e.to_string(),
    }
}

/// The blocking tcp/http check; every socket operation is bounded by `deadline`.
fn blocking_check(
    kind: &NetCheck,
    addr: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, remaining(deadline, timeout)?)
        .map_err(|e| describe_io(&e, timeout))?;
    let NetCheck::Http { path } = kind else {
        return Ok(());
    };
    let io_err = |e: io::Error| describe_io(&e, timeout);

    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: berth-probe/1\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(remaining(deadline, timeout)?))
        .map_err(io_err)?;
    stream.write_all(request.as_bytes()).map_err(io_err)?;

    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let line_end = loop {
        if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
            break pos;
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err("status line too long".to_owned());
        }
        stream
            .set_read_timeout(Some(remaining(deadline, timeout)?))
            .map_err(io_err)?;
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err("connection closed without a response".into()),
            Ok(0) => break buf.len(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    };
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let status = parse_status_line(&line)
        .ok_or_else(|| format!("malformed status line {:?}", truncate(&line, 80)))?;
    if (200..=399).contains(&status) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// The status code of an `HTTP/1.x NNN reason` line.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok()
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::{ExecCheck, HttpCheck, TcpCheck};
    use std::net::TcpListener;
    use std::process::Command;

    fn probe(check: Check, timeout_ms: u32) -> Probe {
        Probe {
            check: Some(check),
            timeout_ms,
            ..Default::default()
        }
    }

    fn tcp(port: u16) -> Check {
        Check::Tcp(TcpCheck { port: port.into() })
    }

    fn http(port: u16, path: &str) -> Check {
        Check::Http(HttpCheck {
            port: port.into(),
            path: path.to_owned(),
        })
    }

    fn local_target() -> ProbeTarget {
        ProbeTarget {
            container_id: "c1".to_owned(),
            runtime_binary: PathBuf::from("/nonexistent/berth-runtime"),
            runtime_root: PathBuf::from("/nonexistent/root"),
            ip: Some(Ipv4Addr::LOCALHOST),
            netns: None,
        }
    }

    fn failure(o: &Outcome) -> &str {
        match o {
            Outcome::Failure(m) => m,
            Outcome::Success => panic!("expected a failure, got success"),
        }
    }

    /// A port on 127.0.0.1 with nothing listening: a socket bound to it but never put in
    /// listening state, so connecting is refused and, as long as the returned fd lives, no
    /// other socket (nor a connect's ephemeral source port) can take the port.
    fn closed_port() -> (std::os::fd::OwnedFd, u16) {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn, bind, getsockname, socket,
        };
        use std::os::fd::AsRawFd;
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
        let port = getsockname::<SockaddrIn>(fd.as_raw_fd()).unwrap().port();
        (fd, port)
    }

    /// Serve `response` to every connection on `listener` (after reading the request head)
    /// from a background thread; records the first request seen.
    fn serve(listener: TcpListener, response: &'static str) -> std::sync::mpsc::Receiver<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut req = Vec::new();
                let mut chunk = [0u8; 1024];
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&req).into_owned());
                let _ = conn.write_all(response.as_bytes());
            }
        });
        rx
    }

    fn http_listener(response: &'static str) -> (u16, std::sync::mpsc::Receiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        (port, serve(l, response))
    }

    // --- schedule / thresholds / state ------------------------------------------------

    #[test]
    fn schedule_defaults() {
        let p = Probe::default();
        assert_eq!(
            schedule(&p),
            (
                Duration::ZERO,
                Duration::from_millis(1000),
                Duration::from_millis(1000)
            )
        );
        let p = Probe {
            initial_delay_ms: 5000,
            period_ms: 250,
            timeout_ms: 100,
            ..Default::default()
        };
        assert_eq!(
            schedule(&p),
            (
                Duration::from_millis(5000),
                Duration::from_millis(250),
                Duration::from_millis(100)
            )
        );
        let p = Probe {
            initial_delay_ms: u32::MAX,
            period_ms: u32::MAX,
            timeout_ms: u32::MAX,
            ..Default::default()
        };
        let max = Duration::from_millis(u32::MAX.into());
        assert_eq!(schedule(&p), (max, max, max));
    }

    #[test]
    fn threshold_defaults() {
        assert_eq!(thresholds(&Probe::default()), (1, 3));
        let p = Probe {
            success_threshold: 2,
            failure_threshold: 5,
            ..Default::default()
        };
        assert_eq!(thresholds(&p), (2, 5));
    }

    fn fail() -> Outcome {
        Outcome::Failure("boom".to_owned())
    }

    #[test]
    fn readiness_starts_failing_and_passes_after_one_success_by_default() {
        let mut s = ProbeState::readiness(&Probe::default());
        assert!(!s.passing());
        // Failures while already failing change nothing.
        assert_eq!(s.observe(&fail()), None);
        assert_eq!(s.last_failure(), Some("boom"));
        assert_eq!(s.observe(&Outcome::Success), Some(true));
        assert!(s.passing());
        assert_eq!(s.last_failure(), None);
        // Further successes: no change reported.
        assert_eq!(s.observe(&Outcome::Success), None);
    }

    #[test]
    fn liveness_starts_passing_and_fails_after_three_by_default() {
        let mut s = ProbeState::liveness(&Probe::default());
        assert!(s.passing());
        assert_eq!(s.observe(&fail()), None);
        assert_eq!(s.observe(&fail()), None);
        assert_eq!(s.consecutive_failures(), 2);
        assert_eq!(s.observe(&fail()), Some(false));
        assert!(!s.passing());
        assert_eq!(s.observe(&fail()), None);
        assert_eq!(s.consecutive_failures(), 4);
    }

    #[test]
    fn success_resets_failure_streak() {
        let mut s = ProbeState::new(&Probe::default(), true);
        assert_eq!(s.observe(&fail()), None);
        assert_eq!(s.observe(&fail()), None);
        assert_eq!(s.observe(&Outcome::Success), None);
        assert_eq!(s.consecutive_failures(), 0);
        assert_eq!(s.observe(&fail()), None);
        assert_eq!(s.observe(&fail()), None);
        assert!(s.passing());
        assert_eq!(s.observe(&fail()), Some(false));
    }

    #[test]
    fn custom_thresholds() {
        let p = Probe {
            success_threshold: 2,
            failure_threshold: 1,
            ..Default::default()
        };
        let mut s = ProbeState::new(&p, true);
        assert_eq!(s.observe(&fail()), Some(false));
        assert_eq!(s.observe(&Outcome::Success), None);
        // A failure in between resets the success streak.
        assert_eq!(s.observe(&fail()), None);
        assert_eq!(s.observe(&Outcome::Success), None);
        assert_eq!(s.consecutive_successes(), 1);
        assert_eq!(s.observe(&Outcome::Success), Some(true));
        assert_eq!(s.observe(&fail()), Some(false));
    }

    #[test]
    fn counters_saturate() {
        let mut s = ProbeState::new(&Probe::default(), false);
        s.failures = u32::MAX;
        assert_eq!(s.observe(&fail()), None);
        assert_eq!(s.consecutive_failures(), u32::MAX);
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line("HTTP/1.1 302 Found"), Some(302));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line("HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line("HTTP/1.1 2000 OK"), None);
        assert_eq!(parse_status_line(""), None);
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::new(4);
        t.push(b"ab");
        t.push(b"cdef");
        assert_eq!(t.buf, b"cdef");
        t.push(b"0123456789");
        assert_eq!(t.buf, b"6789");
    }

    // --- tcp / http in the current namespace ------------------------------------------

    #[tokio::test]
    async fn tcp_open_port_succeeds() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(
            check(&probe(tcp(port), 5000), &local_target()).await,
            Outcome::Success
        );
    }

    #[tokio::test]
    async fn tcp_closed_port_fails() {
        let (_reserved, port) = closed_port();
        let o = check(&probe(tcp(port), 200), &local_target()).await;
        assert_eq!(
            failure(&o),
            format!("tcp 127.0.0.1:{port}: connection refused")
        );
    }

    #[tokio::test]
    async fn tcp_without_ip_fails_clearly() {
        let target = ProbeTarget {
            ip: None,
            ..local_target()
        };
        let o = check(&probe(tcp(80), 200), &target).await;
        assert!(failure(&o).contains("no IP address"), "{o}");
    }

    #[tokio::test]
    async fn invalid_ports_fail() {
        for port in [0, 70000] {
            let p = probe(Check::Tcp(TcpCheck { port }), 200);
            let o = check(&p, &local_target()).await;
            assert!(failure(&o).contains("invalid port"), "{o}");
        }
    }

    #[tokio::test]
    async fn probe_without_check_fails() {
        let o = check(&Probe::default(), &local_target()).await;
        assert!(failure(&o).contains("no check"), "{o}");
    }

    #[tokio::test]
    async fn http_200_succeeds_and_sends_a_proper_request() {
        let (port, requests) =
            http_listener("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        let o = check(&probe(http(port, "/healthz"), 5000), &local_target()).await;
        assert_eq!(o, Outcome::Success);
        let req = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req:?}");
        assert!(
            req.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
            "{req:?}"
        );
        assert!(req.contains("\r\nConnection: close\r\n"), "{req:?}");
    }

    #[tokio::test]
    async fn http_empty_path_defaults_to_root() {
        let (port, requests) = http_listener("HTTP/1.0 302 Found\r\nLocation: /x\r\n\r\n");
        let o = check(&probe(http(port, ""), 5000), &local_target()).await;
        assert_eq!(o, Outcome::Success, "3xx counts as success");
        let req = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(req.starts_with("GET / HTTP/1.1\r\n"), "{req:?}");
    }

    #[tokio::test]
    async fn http_500_fails_with_status() {
        let (port, _requests) =
            http_listener("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
        let o = check(&probe(http(port, "/healthz"), 5000), &local_target()).await;
        assert_eq!(
            failure(&o),
            format!("http GET /healthz on 127.0.0.1:{port}: status 500")
        );
    }

    #[tokio::test]
    async fn http_garbage_response_fails() {
        let (port, _requests) = http_listener("SSH-2.0-OpenSSH_9.2\r\n");
        let o = check(&probe(http(port, "/"), 5000), &local_target()).await;
        assert!(failure(&o).contains("malformed status line"), "{o}");
    }

    #[tokio::test]
    async fn http_closed_port_fails() {
        let (_reserved, port) = closed_port();
        let o = check(&probe(http(port, "/"), 200), &local_target()).await;
        assert!(failure(&o).ends_with(": connection refused"), "{o}");
    }

    #[tokio::test]
    async fn http_silent_listener_times_out() {
        // Bound and listening but never accepting or answering: the kernel completes the
        // handshake, the request is buffered, and the read has to time out.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let o = check(&probe(http(port, "/"), 200), &local_target()).await;
        assert!(failure(&o).contains("timed out after 200ms"), "{o}");
        drop(l);
    }

    #[tokio::test]
    async fn http_bad_path_rejected() {
        let o = check(&probe(http(80, "/a b\r\nX: y"), 200), &local_target()).await;
        assert!(failure(&o).contains("path contains"), "{o}");
    }

    // --- netns --------------------------------------------------------------------------

    /// A named network namespace, deleted on drop (even when the test panics).
    struct NetnsGuard {
        name: String,
    }

    impl NetnsGuard {
        fn create(name: &str) -> Self {
            // A leftover from an earlier, killed run of this test.
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(std::process::Stdio::null())
                .status();
            let status = Command::new("ip")
                .args(["netns", "add", name])
                .status()
                .expect("running ip netns add");
            assert!(status.success(), "ip netns add {name} failed");
            let guard = Self {
                name: name.to_owned(),
            };
            let status = Command::new("ip")
                .args(["-n", name, "link", "set", "lo", "up"])
                .status()
                .expect("running ip link set lo up");
            assert!(status.success(), "bringing lo up in {name} failed");
            guard
        }

        fn path(&self) -> PathBuf {
            PathBuf::from(format!("/run/netns/{}", self.name))
        }
    }

    impl Drop for NetnsGuard {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    #[tokio::test]
    async fn tcp_and_http_connect_inside_netns() {
        // Never a silent pass: the non-root unit test run leaves it out by name
        // (.config/nextest.toml, profile nonroot).
        assert!(
            nix::unistd::geteuid().is_root(),
            "creating a network namespace needs root"
        );
        let own_netns = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let ns = NetnsGuard::create(&format!("berth-probe-{}", std::process::id()));
        let path = ns.path();

        // A listener inside the namespace, on a dedicated thread that setns's first.
        // The port is held closed on the host's loopback and listened on inside the
        // namespace (each namespace has its own port space).
        let (_reserved, port) = closed_port();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns_path = path.clone();
        std::thread::spawn(move || {
            enter_netns(&ns_path).expect("setns into the test namespace");
            let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
            ready_tx.send(()).unwrap();
            // The socket is bound inside the namespace; serving it from another thread is
            // fine (that thread inherits this one's namespace anyway).
            let _requests = serve(l, "HTTP/1.1 204 No Content\r\n\r\n");
            std::thread::park();
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();

        let inside = ProbeTarget {
            netns: Some(path.clone()),
            ..local_target()
        };
        let outside = local_target();

        assert_eq!(
            check(&probe(tcp(port), 5000), &inside).await,
            Outcome::Success
        );
        assert_eq!(
            check(&probe(http(port, "/ready"), 5000), &inside).await,
            Outcome::Success
        );
        // The same port on the host's loopback has nothing behind it.
        let o = check(&probe(tcp(port), 500), &outside).await;
        assert_eq!(
            failure(&o),
            format!("tcp 127.0.0.1:{port}: connection refused")
        );

        // The test thread itself is still in the original namespace.
        assert_eq!(
            std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
            own_netns
        );
    }

    #[tokio::test]
    async fn bad_netns_path_fails() {
        let target = ProbeTarget {
            netns: Some(PathBuf::from("/nonexistent/netns")),
            ..local_target()
        };
        let o = check(&probe(tcp(80), 200), &target).await;
        assert!(failure(&o).contains("entering network namespace"), "{o}");
    }

    // --- exec ---------------------------------------------------------------------------

    /// A fake runtime: a shell script that records its arguments, drops the
    /// `--root ROOT exec ID` prefix and runs the rest as the command. It stands in for
    /// berth-runtime; the real `exec` path is covered by the agent's integration tests.
    ///
    /// The file is written by a child `sh` rather than by this (multi-threaded) process, so
    /// no concurrently forked test child can inherit a writable fd to it (ETXTBSY).
    fn fake_runtime(dir: &std::path::Path) -> ProbeTarget {
        let script = dir.join("fake-runtime");
        let body = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}/args'\nshift 4\nexec \"$@\"\n",
            dir.display()
        );
        let status = Command::new("sh")
            .args([
                "-c",
                "printf '%s' \"$2\" > \"$1\" && chmod 755 \"$1\"",
                "sh",
            ])
            .arg(&script)
            .arg(&body)
            .status()
            .unwrap();
        assert!(status.success());
        ProbeTarget {
            container_id: "ctr-42".to_owned(),
            runtime_binary: script,
            runtime_root: dir.join("state"),
            ip: None,
            netns: None,
        }
    }

    fn exec(cmd: &[&str]) -> Check {
        Check::Exec(ExecCheck {
            command: cmd.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[tokio::test]
    async fn exec_success_passes_runtime_args() {
        let dir = tempfile::tempdir().unwrap();
        let target = fake_runtime(dir.path());
        let o = check(&probe(exec(&["true"]), 5000), &target).await;
        assert_eq!(o, Outcome::Success);
        let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
        let want = format!(
            "--root\n{}\nexec\nctr-42\ntrue\n",
            dir.path().join("state").display()
        );
        assert_eq!(args, want);
    }

    #[tokio::test]
    async fn exec_nonzero_reports_code_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let target = fake_runtime(dir.path());
        let o = check(
            &probe(
                exec(&["sh", "-c", "echo not ready; echo oops >&2; exit 3"]),
                5000,
            ),
            &target,
        )
        .await;
        assert_eq!(failure(&o), "exec exited 3: not ready\noops");
    }

    #[tokio::test]
    async fn exec_output_tail_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let target = fake_runtime(dir.path());
        // 10 000 'x' then a marker: only the last ~1 KiB is kept, ending in the marker.
        let o = check(
            &probe(
                exec(&[
                    "sh",
                    "-c",
                    "head -c 10000 /dev/zero | tr '\\0' x; echo END; exit 1",
                ]),
                5000,
            ),
            &target,
        )
        .await;
        let msg = failure(&o);
        assert!(msg.starts_with("exec exited 1: x"), "{msg:.40}");
        assert!(msg.ends_with("xEND"), "{msg}");
        assert!(
            msg.len() <= "exec exited 1: ".len() + OUTPUT_TAIL_BYTES,
            "{}",
            msg.len()
        );
    }

    #[tokio::test]
    async fn exec_signal_reported() {
        let dir = tempfile::tempdir().unwrap();
        let target = fake_runtime(dir.path());
        let o = check(&probe(exec(&["sh", "-c", "kill -9 $$"]), 5000), &target).await;
        assert_eq!(failure(&o), "exec killed by signal 9");
    }

    #[tokio::test]
    async fn exec_timeout_kills() {
        let dir = tempfile::tempdir().unwrap();
        let target = fake_runtime(dir.path());
        let pidfile = dir.path().join("pid").display().to_string();
        let o = check(
            &probe(
                exec(&[
                    "sh",
                    "-c",
                    "echo $$ > \"$0\"; echo started; exec sleep 30",
                    &pidfile,
                ]),
                200,
            ),
            &target,
        )
        .await;
        let msg = failure(&o);
        assert!(msg.starts_with("exec timed out after 200ms"), "{msg}");
        // The output read before the kill is kept (not asserted: under load the script
        // may not have printed yet when the 200 ms run out).
        assert!(
            msg.ends_with("200ms") || msg.ends_with(": started"),
            "{msg}"
        );

        // The runtime process (here: the sleep it exec'd into) was killed.
        let Ok(pid) = std::fs::read_to_string(&pidfile) else {
            return; // never got as far as writing its pid
        };
        let pid: i32 = pid.trim().parse().expect("a pid in the pid file");
        let gone_or_zombie = || berth_runtime::sys::proc_stat::read(pid).is_none_or(|s| s.ended());
        let give_up = Instant::now() + Duration::from_secs(10);
        while !gone_or_zombie() {
            assert!(Instant::now() < give_up, "timed-out exec probe not killed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn exec_missing_runtime_or_command_fails() {
        let o = check(&probe(exec(&["true"]), 200), &local_target()).await;
        assert!(
            failure(&o).starts_with("exec: starting /nonexistent/berth-runtime"),
            "{o}"
        );

        let dir = tempfile::tempdir().unwrap();
        let target = fake_runtime(dir.path());
        let o = check(&probe(exec(&[]), 200), &target).await;
        assert_eq!(failure(&o), "exec probe has no command");
    }
}
