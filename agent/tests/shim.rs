//! berth-shim and its client against real containers (root): a busybox bundle per test, the
//! `berth-runtime` binary beside the shim, cgroups under /berth-shimtest/<id>.
//!
//! Waits poll with deadlines; nothing asserts on wall-clock durations.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_agent::layout::{ContainerPaths, Layout};
use berth_agent::logs;
use berth_agent::shim::{self, ShimConfig, ShimError, ShimState};
use futures::StreamExt as _;
use serde_json::{Value, json};

/// Deadline for anything a test waits on.
const DEADLINE: Duration = Duration::from_secs(30);

/// A binary of another package (`berth-shim`, `berth-runtime`) in the agent's target
/// directory: cargo builds only this package's binaries for its tests.
fn sibling_binary(name: &str, package: &str) -> PathBuf {
    let agent = Path::new(env!("CARGO_BIN_EXE_berth-agent"));
    let path = agent
        .parent()
        .expect("agent path has a directory")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p {package}` first",
        path.display()
    );
    path
}

fn runtime_binary() -> PathBuf {
    sibling_binary("berth-runtime", "berth-runtime")
}

fn shim_binary() -> PathBuf {
    sibling_binary("berth-shim", "berth-shim")
}

fn shim_config(log_max_bytes: u64, log_files: u32) -> ShimConfig {
    ShimConfig {
        shim_binary: shim_binary(),
        runtime_binary: runtime_binary(),
        log_max_bytes,
        log_files,
        exit_command: Vec::new(),
        systemd_cgroup: false,
    }
}

fn unique_id(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "shimtest-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every cgroup hierarchy mounted on this host (v1 controllers and the unified one).
fn hierarchies() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

/// One container's bundle in a temporary data dir, removed (runtime state and cgroups too)
/// on drop.
struct Ctr {
    tmp: tempfile::TempDir,
    paths: ContainerPaths,
    cfg: ShimConfig,
    cgroup: String,
}

impl Ctr {
    fn new(name: &str, script: &str) -> Ctr {
        Ctr::with(name, script, |_| {})
    }

    /// A bundle running `sh -c SCRIPT`; `edit` changes config.json further.
    fn with(name: &str, script: &str, edit: impl FnOnce(&mut Value)) -> Ctr {
        let tmp = tempfile::tempdir().expect("tempdir");
        let id = unique_id(name);
        let paths = Layout::new(tmp.path()).container(&id);
        std::fs::create_dir_all(&paths.dir).unwrap();
        let status = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/busybox-rootfs.sh"
            ))
            .arg(&paths.rootfs)
            .status()
            .expect("busybox-rootfs.sh");
        assert!(status.success(), "busybox-rootfs.sh failed");
        let status = Command::new(runtime_binary())
            .args(["spec", "--bundle"])
            .arg(&paths.dir)
            .status()
            .expect("berth-runtime spec");
        assert!(status.success(), "berth-runtime spec failed");
        let config_path = paths.dir.join("config.json");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
        let cgroup = format!("/berth-shimtest/{id}");
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["sh", "-c", script]);
        config["root"]["path"] = json!(paths.rootfs);
        config["linux"]["cgroupsPath"] = json!(cgroup);
        edit(&mut config);
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        Ctr {
            tmp,
            paths,
            cfg: shim_config(1 << 20, 2),
            cgroup,
        }
    }

    fn runtime_state_exists(&self) -> bool {
        self.paths.runtime_root.join(&self.paths.id).exists()
    }

    fn log(&self) -> String {
        String::from_utf8(logs::tail(&self.paths, 0).unwrap()).unwrap()
    }

    /// Waits until ctr.log holds `needle`.
    async fn wait_log(&self, needle: &str) {
        poll_until(&format!("{needle:?} in ctr.log"), || {
            self.log().contains(needle)
        })
        .await;
    }

    async fn start(&self) -> ShimState {
        shim::start(&self.cfg, &self.paths)
            .await
            .expect("shim start")
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = Command::new(runtime_binary())
            .arg("--root")
            .arg(&self.paths.runtime_root)
            .args(["delete", "--force", &self.paths.id])
            .stderr(Stdio::null())
            .status();
        for h in hierarchies() {
            let _ = std::fs::remove_dir(h.join(self.cgroup.trim_start_matches('/')));
            // Shared by the tests: goes once the last one is done.
            let _ = std::fs::remove_dir(h.join("berth-shimtest"));
        }
        let _ = &self.tmp;
    }
}

/// Polls `cond` every 20 ms until it holds; panics after [`DEADLINE`].
async fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_exit(ctr: &Ctr, state: &ShimState) -> shim::ExitRecord {
    tokio::time::timeout(DEADLINE, shim::wait_exit(&ctr.paths, state))
        .await
        .expect("container did not end in time")
        .expect("wait_exit")
}

fn status_field(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

#[tokio::test]
async fn exit_code_and_output_are_recorded() {
    let ctr = Ctr::new("exit3", "echo hello; echo oops >&2; exit 3");
    let state = ctr.start().await;
    assert!(state.container_pid > 0);
    assert_ne!(state.container_pid, state.shim_pid);
    assert_eq!(shim::read_state(&ctr.paths).unwrap(), Some(state.clone()));
    let exit = wait_exit(&ctr, &state).await;
    assert_eq!(exit.exit_code, 3);
    assert!(!exit.oom_killed);
    assert!(exit.finished_at_ms >= state.started_at_ms);
    assert_eq!(shim::read_exit(&ctr.paths).unwrap(), Some(exit));
    assert_eq!(ctr.log(), "hello\noops\n");
    // The shim has gone, and deleted the runtime's state and the cgroup before it did.
    assert!(!shim::is_alive(&state));
    assert!(!ctr.runtime_state_exists(), "runtime state left behind");
    let memory = Path::new("/sys/fs/cgroup/memory").join(ctr.cgroup.trim_start_matches('/'));
    assert!(!memory.exists(), "{} left behind", memory.display());
}

#[tokio::test]
async fn a_second_shim_for_a_running_container_is_refused() {
    let ctr = Ctr::new("twice", "exec sleep 1000");
    let state = ctr.start().await;
    assert!(shim::lock_held(&ctr.paths));
    let err = shim::start(&ctr.cfg, &ctr.paths)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("another shim"), "{err}");
    // The first one's files and container are untouched.
    assert_eq!(shim::read_state(&ctr.paths).unwrap(), Some(state.clone()));
    assert!(shim::is_alive(&state));
    // Even started by hand past the agent's check, the shim itself refuses.
    let out = std::process::Command::new(&ctr.cfg.shim_binary)
        .args(["--id", &ctr.paths.id, "--bundle"])
        .arg(&ctr.paths.dir)
        .arg("--runtime")
        .arg(&ctr.cfg.runtime_binary)
        .arg("--runtime-root")
        .arg(&ctr.paths.runtime_root)
        .arg("--dir")
        .arg(&ctr.paths.dir)
        .args(["--log-max-bytes", "1000", "--log-files", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("another shim"),
        "{out:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(state.container_pid.cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_exit(&ctr, &state).await;
    assert!(!shim::lock_held(&ctr.paths));
}

#[tokio::test]
async fn sigkill_is_128_plus_9_and_shim_is_the_parent() {
    let ctr = Ctr::new("sigkill", "exec sleep 1000");
    let state = ctr.start().await;
    assert!(shim::is_alive(&state));
    // The subreaper adopted init when `create` exited.
    assert_eq!(
        status_field(state.container_pid, "PPid"),
        Some(state.shim_pid.to_string())
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(state.container_pid.cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exit = wait_exit(&ctr, &state).await;
    assert_eq!(exit.exit_code, 128 + 9);
    assert!(!exit.oom_killed);
}

#[tokio::test]
async fn failing_create_reports_the_runtime_reason_and_leaves_nothing() {
    let ctr = Ctr::with("badroot", "true", |c| {
        c["root"]["path"] = json!("/nonexistent/berth-shimtest-rootfs");
    });
    let err = shim::start(&ctr.cfg, &ctr.paths).await.unwrap_err();
    match &err {
        ShimError::Start { id, reason } => {
            assert_eq!(id, &ctr.paths.id);
            assert!(reason.starts_with("create: "), "{reason}");
            assert!(
                reason.contains("/nonexistent/berth-shimtest-rootfs"),
                "the runtime's reason is missing: {reason}"
            );
        }
        other => panic!("expected a start error, got {other:?}"),
    }
    assert!(err.to_string().contains(&ctr.paths.id));
    assert!(!ctr.runtime_state_exists(), "runtime state left behind");
    assert_eq!(shim::read_state(&ctr.paths).unwrap(), None);
    assert_eq!(shim::read_exit(&ctr.paths).unwrap(), None);
}

#[tokio::test]
async fn bad_bundle_argument_prints_error_line_and_fails() {
    let ctr = Ctr::new("badbundle", "true");
    let out = Command::new(shim_binary())
        .args([
            "--id",
            &ctr.paths.id,
            "--bundle",
            "/nonexistent/bundle",
            "--runtime",
        ])
        .arg(&ctr.cfg.runtime_binary)
        .arg("--runtime-root")
        .arg(&ctr.paths.runtime_root)
        .arg("--dir")
        .arg(&ctr.paths.dir)
        .args(["--log-max-bytes", "1000", "--log-files", "2"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(report.starts_with("error: create: "), "{report:?}");
    assert!(
        report.contains("/nonexistent/bundle/config.json"),
        "{report:?}"
    );
    assert_eq!(report.matches('\n').count(), 1, "one line: {report:?}");
    assert!(!ctr.runtime_state_exists());
    assert!(!ctr.paths.shim().shim_state().exists());

    // And a command line it cannot parse.
    let out = Command::new(shim_binary())
        .args(["--id", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("error: "));
}

#[tokio::test]
async fn rotation_keeps_k_capped_parts_and_tail_reads_across_them() {
    let mut ctr = Ctr::new(
        "rotate",
        r#"i=0; while [ $i -lt 200 ]; do printf "line-%03d\n" $i; i=$((i+1)); done"#,
    );
    ctr.cfg = shim_config(100, 3);
    let state = ctr.start().await;
    assert_eq!(wait_exit(&ctr, &state).await.exit_code, 0);
    let p = &ctr.paths;
    for part in [p.log(), p.old_log(1), p.old_log(2)] {
        let len = std::fs::metadata(&part).unwrap().len();
        assert!(len <= 100, "{} has {len} bytes", part.display());
        // 9-byte lines and a 100-byte cap: parts end at line boundaries.
        assert!(std::fs::read(&part).unwrap().ends_with(b"\n"));
    }
    assert!(!p.old_log(3).exists(), "more than 3 parts kept");
    let line = |i: usize| format!("line-{i:03}\n");
    let expect = |from: usize| (from..200).map(line).collect::<String>();
    let tail = |n: usize| String::from_utf8(logs::tail(p, n).unwrap()).unwrap();
    assert_eq!(tail(5), expect(195));
    // 20 lines reach back over two rotations or more (at most 11 lines a part, and at
    // least 23 lines kept).
    assert_eq!(tail(20), expect(180));
    // All that is kept: a contiguous run ending at the last line.
    let all = tail(0);
    assert_eq!(tail(1000), all);
    let first: usize = all[5..8].parse().unwrap();
    assert_eq!(all, expect(first));
    // Two full parts of 11 lines and 1 to 11 lines in ctr.log.
    assert!((23..=33).contains(&(200 - first)), "kept from line {first}");
}

#[tokio::test]
async fn wait_exit_works_for_an_adopted_shim() {
    let ctr = Ctr::new(
        "adopted",
        "while [ ! -e /tmp/go ]; do sleep 0.02; done; exit 5",
    );
    // A shim this process is not the parent of, as after an agent restart: `sh` starts it in
    // the background and exits, so it is re-parented away from us.
    let mut sh = Command::new("sh")
        .args(["-c", "\"$@\" & exit 0", "sh"])
        .arg(&ctr.cfg.shim_binary)
        .args(["--id", &ctr.paths.id, "--bundle"])
        .arg(&ctr.paths.dir)
        .arg("--runtime")
        .arg(&ctr.cfg.runtime_binary)
        .arg("--runtime-root")
        .arg(&ctr.paths.runtime_root)
        .arg("--dir")
        .arg(&ctr.paths.dir)
        .args(["--log-max-bytes", "100000", "--log-files", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut report = String::new();
    BufReader::new(sh.stdout.take().unwrap())
        .read_line(&mut report)
        .unwrap();
    assert!(sh.wait().unwrap().success());
    assert!(report.starts_with("ok "), "{report:?}");
    let state = shim::read_state(&ctr.paths).unwrap().expect("shim.json");
    assert_eq!(report.trim(), format!("ok {}", state.container_pid));
    assert!(shim::is_alive(&state));
    assert_ne!(
        status_field(state.shim_pid, "PPid"),
        Some(std::process::id().to_string())
    );
    std::fs::write(ctr.paths.rootfs.join("tmp/go"), "").unwrap();
    let exit = wait_exit(&ctr, &state).await;
    assert_eq!(exit.exit_code, 5);
    assert!(!shim::is_alive(&state));
}

#[tokio::test]
async fn a_shim_gone_without_exit_json_is_reported() {
    let ctr = Ctr::new("vanish", "exec sleep 1000");
    let state = ctr.start().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(state.shim_pid.cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let err = tokio::time::timeout(DEADLINE, shim::wait_exit(&ctr.paths, &state))
        .await
        .expect("wait_exit returns once the shim is gone")
        .unwrap_err();
    assert!(
        matches!(&err, ShimError::Vanished { pid, .. } if *pid == state.shim_pid),
        "{err:?}"
    );
    // A stale state never counts as alive, even with the pid reused.
    let reused = ShimState {
        shim_pid: std::process::id(),
        ..state
    };
    assert!(!shim::is_alive(&reused));
}

#[tokio::test]
async fn oom_kill_is_recorded() {
    let ctr = Ctr::with(
        "oom",
        r#"x=$(head -c 100m /dev/zero | tr "\0" a); echo survived ${#x}"#,
        |c| {
            c["linux"]["resources"]["memory"] = json!({"limit": 16 << 20, "swap": 16 << 20});
        },
    );
    let state = ctr.start().await;
    let exit = wait_exit(&ctr, &state).await;
    assert!(exit.oom_killed, "{exit:?}; log: {}", ctr.log());
    assert_eq!(exit.exit_code, 128 + 9);
    assert!(!ctr.log().contains("survived"));
}

#[tokio::test]
async fn stop_lets_a_term_trap_exit() {
    let ctr = Ctr::new(
        "trap",
        r#"trap "exit 7" TERM; echo ready; sleep 1000 & wait"#,
    );
    let state = ctr.start().await;
    ctr.wait_log("ready").await;
    let exit = shim::stop(&ctr.cfg, &ctr.paths, &state, DEADLINE)
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 7);
    assert!(!shim::is_alive(&state));
}

#[tokio::test]
async fn stop_kills_what_ignores_term_after_the_grace() {
    let ctr = Ctr::new("ignore", r#"trap "" TERM; echo ready; sleep 1000 & wait"#);
    let state = ctr.start().await;
    ctr.wait_log("ready").await;
    let exit = shim::stop(&ctr.cfg, &ctr.paths, &state, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 128 + 9);
    // Stopping what has stopped returns the same record.
    let again = shim::stop(&ctr.cfg, &ctr.paths, &state, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(again, exit);
}

#[tokio::test]
async fn follow_streams_appended_output_across_rotations_and_ends_after_exit() {
    let mut ctr = Ctr::new(
        "follow",
        r#"echo first; while [ ! -e /tmp/go ]; do sleep 0.02; done
           i=0; while [ $i -lt 30 ]; do echo line$i; i=$((i+1)); done"#,
    );
    // Small parts and enough of them that none is deleted: every rotation must be followed.
    ctr.cfg = shim_config(40, 100);
    let state = ctr.start().await;
    let (paths, st) = (ctr.paths.clone(), state.clone());
    let until = async move {
        let _ = shim::wait_exit(&paths, &st).await;
    };
    let mut stream = Box::pin(logs::follow(ctr.paths.clone(), 0, until));
    let mut got = Vec::new();
    while !got.ends_with(b"first\n") {
        let item = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("first line in time")
            .expect("stream ended early");
        got.extend(item.unwrap());
    }
    std::fs::write(ctr.paths.rootfs.join("tmp/go"), "").unwrap();
    let rest = tokio::time::timeout(DEADLINE, async {
        while let Some(item) = stream.next().await {
            got.extend(item.unwrap());
        }
    });
    rest.await.expect("follow ended after the exit");
    let expect: String = std::iter::once("first\n".to_string())
        .chain((0..30).map(|i| format!("line{i}\n")))
        .collect();
    assert_eq!(String::from_utf8(got).unwrap(), expect);
    assert!(
        ctr.paths.old_log(3).exists(),
        "the output was meant to rotate"
    );
    assert_eq!(shim::read_exit(&ctr.paths).unwrap().unwrap().exit_code, 0);
}

/// Not a timing: the memory of a shim holding a running container, printed (`--no-capture`
/// shows it) and bounded as the README states it: resident (Rss, every page it maps in memory,
/// shared or not) under [`SHIM_RSS_MAX_KB`], of which its own anonymous memory under
/// [`SHIM_ANON_MAX_KB`]. And the shim is single-threaded with only its own descriptors open.
/// The README's figures for the shim: keep them equal.
const SHIM_RSS_MAX_KB: u64 = 4 * 1024;
const SHIM_ANON_MAX_KB: u64 = 1024;

#[tokio::test]
async fn shim_footprint() {
    let ctr = Ctr::new("footprint", "exec sleep 1000");
    let state = ctr.start().await;
    let pid = state.shim_pid;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kb = |key: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in smaps_rollup"))
    };
    let (rss, pss, anon) = (kb("Rss"), kb("Pss"), kb("Anonymous"));
    println!("berth-shim pid {pid}: Rss {rss} kB, Pss {pss} kB, Anonymous {anon} kB");
    assert_eq!(status_field(pid, "Threads").as_deref(), Some("1"));
    assert!(rss < SHIM_RSS_MAX_KB, "resident (Rss) {rss} kB");
    assert!(anon < SHIM_ANON_MAX_KB, "anonymous memory {anon} kB");
    // stdin, stdout (/dev/null now), stderr, the log pipe, the signalfd, ctr.log and shim.lock.
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(fds <= 7, "{fds} descriptors open");
    let exit = shim::stop(&ctr.cfg, &ctr.paths, &state, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 128 + 9);
}
