//! How berth is called from outside: the CLI's global flags before or after the subcommand,
//! the agent's `--scheduler` as a bare HOST:PORT (and a malformed one refused at start), and
//! token lifetimes under a second refused by the CLI and by the scheduler, and a cgroup driver
//! the host cannot use refused by the agent.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto::v1::CreateTokenRequest;
use berth_proto::v1::auth_service_client::AuthServiceClient;
use berth_tests::cluster::{Fabric, SchedulerProc, start_nodes_at};
use berth_tests::{binary, poll_until, run_err, run_ok};
use serde_json::Value;

const IMAGE: &str = "flags-busybox:1";
const WAIT: Duration = Duration::from_secs(60);

/// `berth ARGS...` with no BERTH_* variable from the environment deciding for it.
fn berth(args: &[&str]) -> Command {
    let mut cmd = Command::new(binary("berth"));
    cmd.args(args)
        .env_remove("BERTH_SCHEDULER")
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_TLS_CA")
        .stdin(Stdio::null());
    cmd
}

fn json(cmd: &mut Command) -> Value {
    let out = run_ok(cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd:?}: bad JSON ({e}): {out}"))
}

#[test]
fn an_agent_given_host_port_registers_and_global_flags_go_anywhere() {
    let sched = SchedulerProc::start(&[]);
    let addr = sched.address();
    let mut fabric = Fabric::new();
    let nodes = start_nodes_at(&addr, &mut fabric, 1, "flags", IMAGE);
    let node = nodes[0].name().to_string();
    // The agent dialled the bare address (no scheme): it registered and is ready.
    let listed = poll_until("the node to be ready", WAIT, || {
        let nodes = json(&mut berth(&[
            "--scheduler",
            &addr,
            "--output",
            "json",
            "nodes",
        ]));
        let ready = nodes
            .as_array()?
            .iter()
            .any(|n| n["name"] == node && n["ready"] == true);
        ready.then_some(nodes)
    });
    // The same listing with the flags after the subcommand, or split around it.
    for args in [
        vec!["nodes", "--scheduler", &addr, "--output", "json"],
        vec!["-o", "json", "nodes", "--scheduler", &addr],
        vec!["--scheduler", &addr, "nodes", "-o", "json"],
    ] {
        let again = json(&mut berth(&args));
        assert_eq!(again.as_array().map(Vec::len), Some(1), "{args:?}: {again}");
        assert_eq!(again[0]["name"], listed[0]["name"], "{args:?}");
    }
    for args in [
        vec!["--scheduler", &addr, "-o", "json", "status"],
        vec!["status", "-o", "json", "--scheduler", &addr],
        vec!["--output", "json", "--scheduler", &addr, "token", "ls"],
        vec!["token", "ls", "--scheduler", &addr, "--output", "json"],
    ] {
        assert_eq!(json(&mut berth(&args)), serde_json::json!([]), "{args:?}");
    }
    // --data-dir before the subcommand, for a local command.
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let images = json(&mut berth(&[
        "--data-dir",
        data_dir,
        "-o",
        "json",
        "image",
        "ls",
    ]));
    assert_eq!(images, serde_json::json!([]));
    // A flag the CLI does not know is still refused, wherever it is.
    let err = run_err(&mut berth(&["--schedular", &addr, "nodes"]));
    assert!(err.contains("--schedular"), "{err}");
}

/// Runs `berth-agent --scheduler ADDR` and returns its exit status and stderr, failing if it
/// is still running after `within` (it would be retrying for ever).
fn agent_with_scheduler(addr: &str, within: Duration) -> (std::process::ExitStatus, String) {
    agent_with_args(addr, &[], within)
}

/// As [`agent_with_scheduler`], with `extra` flags.
fn agent_with_args(
    addr: &str,
    extra: &[&str],
    within: Duration,
) -> (std::process::ExitStatus, String) {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary("berth-agent"))
        .args(["--scheduler", addr, "--node-name", "bad-address"])
        .args(extra)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("BERTH_SCHEDULER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start berth-agent");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for berth-agent") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth-agent --scheduler {addr:?} still runs: it should refuse the address");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn the_agent_refuses_a_malformed_scheduler_address_at_start() {
    for addr in [
        "127.0.0.1:notaport",
        "127.0.0.1",
        "ftp://127.0.0.1:7700",
        "http://127.0.0.1:7700/api",
        "127.0.0.1:7700,,  ,bad host:1",
    ] {
        let (status, stderr) = agent_with_scheduler(addr, WAIT);
        assert!(!status.success(), "{addr}: {status} {stderr}");
        assert!(stderr.contains("invalid --scheduler"), "{addr}: {stderr}");
        assert!(!stderr.contains("transport error"), "{addr}: {stderr}");
    }
    let (_, stderr) = agent_with_scheduler("127.0.0.1:notaport", WAIT);
    assert!(stderr.contains("\"127.0.0.1:notaport\""), "{stderr}");
}

/// The systemd cgroup driver needs systemd as PID 1 on cgroup v2 (tests/tests/systemd_guest.rs
/// runs it there); asked for on a host without that, the agent stops at start saying why, and
/// a driver it does not know is refused by name.
#[test]
fn the_agent_refuses_a_cgroup_driver_the_host_cannot_use() {
    let reachable = "127.0.0.1:1";
    let (status, stderr) = agent_with_args(reachable, &["--cgroup-driver", "systemdd"], WAIT);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("--cgroup-driver") && stderr.contains("systemdd"),
        "{stderr}"
    );
    let systemd = std::path::Path::new("/run/systemd/system").is_dir();
    let unified = std::fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok();
    if systemd && unified {
        // This host can use the driver; the refusal below is for the hosts that cannot.
        return;
    }
    let (status, stderr) = agent_with_args(reachable, &["--cgroup-driver", "systemd"], WAIT);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("--cgroup-driver"), "{stderr}");
    let why = if systemd {
        "unified cgroup v2"
    } else {
        "systemd as PID 1"
    };
    assert!(stderr.contains(why), "{stderr}");
}

#[test]
fn token_ttls_under_a_second_are_refused_by_the_cli_and_the_scheduler() {
    let sched = SchedulerProc::start(&[]);
    let addr = sched.address();
    for ttl in ["500ms", "999ms", "1ms"] {
        let err = run_err(&mut berth(&[
            "token",
            "create",
            "--role",
            "viewer",
            "--ttl",
            ttl,
            "--scheduler",
            &addr,
        ]));
        assert!(err.contains("under one second"), "{ttl}: {err}");
    }
    // Asked directly, the scheduler refuses too (an older CLI would send 0 seconds: never).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused: Result<_, String> = rt.block_on(async {
        let mut client = AuthServiceClient::connect(sched.endpoint())
            .await
            .map_err(|e| e.to_string())?;
        client
            .create_token(CreateTokenRequest {
                role: "viewer".into(),
                name: "short".into(),
                ttl_seconds: 0,
                ttl_ms: 500,
            })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    });
    let status = refused.unwrap_err();
    assert!(status.contains("InvalidArgument"), "{status}");
    assert!(status.contains("under one second"), "{status}");
    let tokens = json(&mut berth(&[
        "--scheduler",
        &addr,
        "-o",
        "json",
        "token",
        "ls",
    ]));
    assert_eq!(tokens, serde_json::json!([]), "nothing was created");
    // A second and a half is kept to the millisecond: it expires, unlike a truncated 0.
    let created = json(&mut berth(&[
        "token",
        "create",
        "--role",
        "viewer",
        "--ttl",
        "1500ms",
        "--scheduler",
        &addr,
        "-o",
        "json",
    ]));
    assert_ne!(created["expires"], "never", "{created}");
}
