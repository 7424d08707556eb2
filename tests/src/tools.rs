//! Running the external tools the end-to-end tests need: finding them, and running commands
//! that must succeed or must fail.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Fails the test loudly unless running as root (the README's test command runs as root).
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root: run the test suite as root (see README)"
    );
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The path of an installed tool, or a loud failure naming the setup script.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed: run scripts/setup.sh (the README's test command does)");
}

/// Runs a command and returns its output, whatever its exit status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"))
}

/// Runs a command with `stdin` piped in and returns its output, whatever its exit status.
pub fn output_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("write stdin");
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"))
}

/// Runs a command that must succeed, returning stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail, returning stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `skopeo copy --quiet FROM TO`, with extra flags before the two references.
pub fn skopeo_copy(from: &str, to: &str, extra: &[&str]) {
    run_ok(
        Command::new(require_tool("skopeo"))
            .args(["copy", "--quiet"])
            .args(extra)
            .arg(from)
            .arg(to),
    );
}

/// Polls `check` until it gives `Some`, failing the test naming `what` once `within` has passed.
/// Tests wait this way, never with a fixed sleep.
pub fn poll_until<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The files under `dir` holding `needle`, one per line (`grep -rlF`, devices and the node's
/// `netns` files skipped, and directories named `exclude`). A grep that could not read
/// something fails the test, so a secret is never "absent" from a file grep skipped.
pub fn files_holding(dir: &std::path::Path, needle: &str, exclude: &str) -> String {
    let out = Command::new("grep")
        .args(["-rlF", "--devices=skip", "--exclude-dir=netns"])
        .arg(format!("--exclude-dir={exclude}"))
        .arg(needle)
        .arg(dir)
        .output()
        .expect("run grep");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "grep -r {}: {out:?}",
        dir.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
