//! The bench's traffic: a small HTTP/1.x server (keep-alive aware, answers its tag), a bulk
//! sender, the Rust clients that time single requests, and `ab` run in a container's netns.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::common::in_netns;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Serves HTTP on `port` in the netns at `netns`: every request gets `200` with body `tag`,
/// keeping the connection open when the client asks for keep-alive (as `ab -k` does).
pub(crate) fn http_server(netns: &Path, port: u16, tag: &str) {
    let listener = in_netns(netns, || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        .unwrap_or_else(|e| panic!("bind :{port} in {}: {e}", netns.display()));
    let tag = tag.to_owned();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let tag = tag.clone();
            std::thread::spawn(move || serve_http(conn, &tag));
        }
    });
}

fn serve_http(mut conn: TcpStream, tag: &str) {
    let _ = conn.set_nodelay(true);
    let (mut buf, mut filled) = (vec![0u8; 8192], 0);
    loop {
        match conn.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        while let Some(end) = find(&buf[..filled], b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let keep = if head.contains("http/1.0") {
                head.contains("keep-alive")
            } else {
                !head.contains("connection: close")
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{tag}",
                tag.len(),
                if keep { "keep-alive" } else { "close" }
            );
            if conn.write_all(answer.as_bytes()).is_err() || !keep {
                return;
            }
            buf.copy_within(end + 4..filled, 0);
            filled -= end + 4;
        }
        if filled == buf.len() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `bytes` bytes to every connection on `port` in the netns at `netns`, then closes it.
pub(crate) fn bulk_server(netns: &Path, port: u16, bytes: usize) {
    let listener = in_netns(netns, || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        .unwrap_or_else(|e| panic!("bind :{port} in {}: {e}", netns.display()));
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let chunk = vec![7u8; 64 * 1024];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if conn.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
}

/// One HTTP request over a new connection (closed by the server): the body and the time.
pub(crate) fn request_new_conn(to: SocketAddr) -> anyhow::Result<(String, Duration)> {
    let began = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&to, TIMEOUT).with_context(|| format!("connect {to}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_nodelay(true)?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::with_capacity(128);
    s.read_to_end(&mut answer)?;
    let took = began.elapsed();
    let Some(end) = find(&answer, b"\r\n\r\n") else {
        bail!(
            "{to}: no HTTP answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
    };
    Ok((
        String::from_utf8_lossy(&answer[end + 4..]).into_owned(),
        took,
    ))
}

/// A kept-alive HTTP connection whose requests are timed one by one.
pub(crate) struct KeptAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeptAlive {
    pub(crate) fn open(to: SocketAddr) -> anyhow::Result<KeptAlive> {
        let stream = TcpStream::connect_timeout(&to, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(KeptAlive {
            stream,
            buf: vec![0u8; 1024],
        })
    }

    /// One request; the answer is small enough to arrive in one read or a few.
    pub(crate) fn request(&mut self) -> anyhow::Result<Duration> {
        let began = Instant::now();
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        let mut filled = 0;
        loop {
            let n = self.stream.read(&mut self.buf[filled..])?;
            if n == 0 {
                bail!("the server closed a kept-alive connection");
            }
            filled += n;
            if let Some(end) = find(&self.buf[..filled], b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .split("content-length: ")
                    .nth(1)
                    .and_then(|v| v.split("\r\n").next())
                    .and_then(|v| v.trim().parse().ok())
                    .context("no Content-Length")?;
                if filled >= end + 4 + len {
                    return Ok(began.elapsed());
                }
            }
        }
    }
}

/// Reads one bulk transfer from `to` to its end: bytes per second.
pub(crate) fn bulk_read(to: SocketAddr) -> anyhow::Result<f64> {
    let began = Instant::now();
    let mut s = TcpStream::connect_timeout(&to, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let (mut buf, mut total) = (vec![0u8; 256 * 1024], 0f64);
    loop {
        match s.read(&mut buf)? {
            0 => break,
            n => total += f64::from(u32::try_from(n).unwrap_or(u32::MAX)),
        }
    }
    Ok(total / began.elapsed().as_secs_f64())
}

/// What one `ab` run reported.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AbRun {
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
}

/// `ab -n requests -c concurrency [-k] http://to/` in the netns at `netns`, with its
/// percentile table (`-e`, milliseconds to three decimals) read back.
pub(crate) fn ab(
    netns: &Path,
    to: SocketAddr,
    requests: usize,
    concurrency: usize,
    keepalive: bool,
) -> anyhow::Result<AbRun> {
    let csv = tempfile::NamedTempFile::new()?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.display()))
        .args(["ab", "-q", "-r", "-n", &requests.to_string()])
        .args(["-c", &concurrency.to_string(), "-e"])
        .arg(csv.path());
    if keepalive {
        cmd.arg("-k");
    }
    let out = cmd
        .arg(format!("http://{to}/"))
        .output()
        .context("running ab")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "ab {to}: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let failed = field(&stdout, "Failed requests:").unwrap_or(0.0);
    if failed > 0.0 {
        bail!("ab {to}: {failed} failed requests:\n{stdout}");
    }
    let rps = field(&stdout, "Requests per second:").context("ab: no requests per second")?;
    let table = std::fs::read_to_string(csv.path())?;
    let pct = |p: &str| -> anyhow::Result<f64> {
        table
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{p},")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|ms| ms * 1000.0)
            .with_context(|| format!("ab: no {p}% line"))
    };
    Ok(AbRun {
        rps,
        p50_us: pct("50")?,
        p99_us: pct("99")?,
    })
}

/// The number after `label` in ab's report.
fn field(report: &str, label: &str) -> Option<f64> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
