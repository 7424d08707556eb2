//! berth-agent's volumes, binds, configs and secrets end to end: a real agent process driven
//! by the fake scheduler, real containers, real mounts; every check is made from inside the
//! container or on the host's mount table.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_proto::v1::{
    Assignment, BindMount, ConfigMount, ContainerState, FileContent, SecretEnv, SecretMount,
    SecurityContext, TmpfsMount, VolumeMount,
};
use berth_tests::agent_node::{AgentNode, AgentOptions};
use berth_tests::fake_scheduler::{FakeScheduler, assignment};
use berth_tests::{binary, files_holding};

const WAIT: Duration = Duration::from_secs(60);
const IMAGE: &str = "files-busybox:1";

fn node(sched: &FakeScheduler, base: &str, cidr: &str, opts: AgentOptions) -> AgentNode {
    AgentNode::start_with_busybox(sched, base, cidr, IMAGE, opts)
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// Runs `cmd` in the container; its stdout when it succeeds, else the test fails.
fn exec_ok(n: &AgentNode, id: &str, cmd: &[&str]) -> String {
    let out = n.exec(id, cmd);
    assert!(out.status.success(), "exec {cmd:?} in {id}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn content(name: &str, version: u64, data: &str) -> FileContent {
    FileContent {
        name: name.into(),
        version,
        data: data.as_bytes().to_vec(),
    }
}

/// A value no other test or process writes, so finding it anywhere means it leaked.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

fn is_mounted(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_string_lossy();
    mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.as_ref()))
}

/// The line of the container's /proc/mounts for `target`.
fn mount_line(n: &AgentNode, id: &str, target: &str) -> String {
    let mounts = exec_ok(n, id, &["cat", "/proc/mounts"]);
    mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(target))
        .unwrap_or_else(|| panic!("{target} is not mounted in {id}:\n{mounts}"))
        .to_string()
}

fn with_files(id: &str) -> Assignment {
    let mut a = assignment(id, IMAGE);
    // The variable is compared with the mounted file, so no copy of the value is on disk.
    a.command = sh(
        "test -n \"$DB_PW\" && test \"$DB_PW\" = \"$(cat /run/secrets/db)\" && touch /tmp/env-ok; \
         exec sleep 1000",
    );
    a.security = Some(SecurityContext {
        run_as: "1000:1001".into(),
        ..Default::default()
    });
    a.configs = vec![ConfigMount {
        name: "app".into(),
        path: "/etc/app/app.conf".into(),
        mode: 0o440,
        version: 2,
    }];
    a.secrets = vec![
        SecretMount {
            name: "db".into(),
            path: String::new(),
            version: 1,
        },
        SecretMount {
            name: "api".into(),
            path: "/run/secrets/nested/api".into(),
            version: 3,
        },
    ];
    a.env_from_secret = vec![SecretEnv {
        env: "DB_PW".into(),
        secret: "db".into(),
        version: 1,
    }];
    a
}

#[test]
fn configs_and_secrets_wait_for_their_file_set_then_mount_as_promised_and_leave_no_trace() {
    let sched = FakeScheduler::start();
    let mut n = node(&sched, "files", "10.93.1.0/24", AgentOptions::default());
    let secret = marker("s3cret");
    let api_key = marker("apikey");
    let a = with_files("files-1");
    // The assignment comes before its FileSet: it waits, saying for what.
    sched.assign(n.name(), vec![a.clone()]);
    let pending = sched.wait_for(n.name(), "files-1 waiting for its config", WAIT, |h| {
        h.containers
            .iter()
            .find(|c| c.container_id == "files-1" && !c.message.is_empty())
            .cloned()
    });
    assert_eq!(pending.state, ContainerState::Pending as i32, "{pending:?}");
    assert_eq!(
        pending.message,
        "waiting for config app version 2 from the scheduler"
    );
    sched.files(
        n.name(),
        vec![content("app", 2, "listen = 8080\n")],
        vec![content("db", 1, &secret), content("api", 3, &api_key)],
    );
    sched.wait_state(n.name(), "files-1", ContainerState::Running, WAIT);

    // Secrets: 0400, owned by the process user, on a read-only tmpfs at /run/secrets.
    let stat = exec_ok(
        &n,
        "files-1",
        &["stat", "-c", "%a %u %g", "/run/secrets/db"],
    );
    assert_eq!(stat.trim(), "400 1000 1001");
    assert_eq!(exec_ok(&n, "files-1", &["cat", "/run/secrets/db"]), secret);
    assert_eq!(
        exec_ok(&n, "files-1", &["cat", "/run/secrets/nested/api"]),
        api_key
    );
    let line = mount_line(&n, "files-1", "/run/secrets");
    assert!(line.contains(" tmpfs ") && line.contains(" ro,"), "{line}");
    assert!(
        !n.exec("files-1", &["touch", "/run/secrets/new"])
            .status
            .success()
    );
    // The config: its content and mode, read-only.
    assert_eq!(
        exec_ok(&n, "files-1", &["cat", "/etc/app/app.conf"]),
        "listen = 8080\n"
    );
    let mode = exec_ok(
        &n,
        "files-1",
        &["stat", "-c", "%a %u %g", "/etc/app/app.conf"],
    );
    assert_eq!(mode.trim(), "440 1000 1001");
    assert!(
        !n.exec("files-1", &["sh", "-c", "echo x > /etc/app/app.conf"])
            .status
            .success()
    );
    let line = mount_line(&n, "files-1", "/etc/app/app.conf");
    assert!(line.contains(" ro,"), "{line}");
    // The environment variable from the secret.
    exec_ok(&n, "files-1", &["test", "-e", "/tmp/env-ok"]);

    // Nothing on disk holds the secret: only the container's tmpfs, which is mounted.
    let private = n.container_dir("files-1").join("private");
    assert!(is_mounted(&private), "{} is not a mount", private.display());
    assert_eq!(files_holding(n.data_dir(), &secret, "private"), "");
    // The same search does see it on the tmpfs (in the secret's file and the bundle's env).
    let on_tmpfs = files_holding(n.data_dir(), &secret, "none");
    assert!(
        on_tmpfs.contains("private/secrets/db") && on_tmpfs.contains("private/config.json"),
        "{on_tmpfs}"
    );
    assert_eq!(files_holding(n.data_dir(), &api_key, "private"), "");

    // An agent restart adopts the container: its tmpfs stays.
    n.restart();
    sched.wait_state(n.name(), "files-1", ContainerState::Running, WAIT);
    assert_eq!(exec_ok(&n, "files-1", &["cat", "/run/secrets/db"]), secret);

    // Removed: the tmpfs is unmounted and no trace of the secret is left.
    sched.assign(n.name(), vec![]);
    sched.wait_gone(n.name(), "files-1", WAIT);
    assert!(!is_mounted(&private));
    assert!(!n.container_dir("files-1").exists());
    assert_eq!(files_holding(n.data_dir(), &secret, "none"), "");
    assert!(
        !n.log().contains(&secret),
        "the agent's log holds the secret"
    );
    assert!(
        !n.log().contains(&api_key),
        "the agent's log holds the secret"
    );
}

#[test]
fn named_volumes_outlive_their_container_and_binds_follow_the_allow_list() {
    let allowed = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let allowed_path = std::fs::canonicalize(allowed.path()).unwrap();
    let sched = FakeScheduler::start();
    let mut opts = AgentOptions::default();
    opts.extra_args.push("--allow-bind".into());
    opts.extra_args.push(allowed.path().display().to_string());
    let n = node(&sched, "vols", "10.93.2.0/24", opts);
    // The registration carries the canonical allow-list.
    let registered = sched.wait_registrations(n.name(), 1, WAIT);
    assert_eq!(
        registered.allowed_bind_paths,
        [allowed_path.display().to_string()]
    );

    let storage = |id: &str, script: &str| {
        let mut a = assignment(id, IMAGE);
        a.command = sh(script);
        a.volumes = vec![VolumeMount {
            name: "data".into(),
            path: "/data".into(),
            read_only: false,
        }];
        a.binds = vec![BindMount {
            source: allowed.path().display().to_string(),
            path: "/host".into(),
            read_only: false,
        }];
        a.tmpfs = vec![TmpfsMount {
            path: "/scratch".into(),
            size_bytes: 1 << 20,
            mode: 0,
        }];
        a
    };
    let first = storage(
        "vol-1",
        "echo kept > /data/x && echo from-ctr > /host/out; exec sleep 1000",
    );
    // A new volume over a directory the image fills is seeded from it.
    let mut first = first;
    first.volumes.push(VolumeMount {
        name: "seeded".into(),
        path: "/etc".into(),
        read_only: false,
    });
    sched.assign(n.name(), vec![first]);
    sched.wait_state(n.name(), "vol-1", ContainerState::Running, WAIT);
    let seeded = std::fs::read_to_string(n.data_dir().join("volumes/seeded/_data/passwd")).unwrap();
    assert!(seeded.starts_with("root:x:0:0:"), "{seeded}");
    assert_eq!(
        mount_line(&n, "vol-1", "/etc").split(' ').nth(1),
        Some("/etc")
    );
    let written = berth_tests::poll_until("the bind's file", WAIT, || {
        std::fs::read_to_string(allowed.path().join("out")).ok()
    });
    assert_eq!(written, "from-ctr\n");
    let line = mount_line(&n, "vol-1", "/scratch");
    assert!(
        line.contains(" tmpfs ") && line.contains("size=1024k"),
        "{line}"
    );

    // Replaced by another container on the same node: the volume's data is still there.
    let second = storage("vol-2", "exec sleep 1000");
    sched.assign(n.name(), vec![second]);
    sched.wait_state(n.name(), "vol-2", ContainerState::Running, WAIT);
    sched.wait_gone(n.name(), "vol-1", WAIT);
    assert_eq!(exec_ok(&n, "vol-2", &["cat", "/data/x"]), "kept\n");
    assert_eq!(
        std::fs::read_to_string(n.data_dir().join("volumes/data/_data/x")).unwrap(),
        "kept\n"
    );
    assert!(n.data_dir().join("volumes/data/users/vol-2").exists());
    assert!(!n.data_dir().join("volumes/data/users/vol-1").exists());

    // A bind outside --allow-bind fails the container, naming the field.
    let mut refused = assignment("bind-out", IMAGE);
    refused.command = sh("exec sleep 1000");
    refused.binds = vec![BindMount {
        source: outside.path().display().to_string(),
        path: "/host".into(),
        read_only: true,
    }];
    sched.assign(n.name(), vec![refused]);
    let failed = sched.wait_state(n.name(), "bind-out", ContainerState::Failed, WAIT);
    assert!(
        failed.message.contains("binds[0].source") && failed.message.contains("--allow-bind"),
        "{failed:?}"
    );
}

#[test]
fn a_missing_allow_bind_path_stops_the_agent_naming_it() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(binary("berth-agent"))
        .args([
            "--scheduler",
            "http://127.0.0.1:9",
            "--node-name",
            "allow-bind-check",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--allow-bind",
            "/no/such/berth-dir",
        ])
        .output()
        .expect("run berth-agent");
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--allow-bind /no/such/berth-dir"),
        "{stderr}"
    );
}

/// The agent's JSON log lines whose message is `message`.
fn log_lines(n: &AgentNode, message: &str) -> Vec<serde_json::Value> {
    n.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

/// Seconds since midnight of a log line's timestamp (RFC 3339, UTC, microseconds).
fn log_seconds(line: &serde_json::Value) -> f64 {
    let ts = line["timestamp"].as_str().expect("a timestamp");
    let time = &ts[ts.find('T').expect("RFC 3339") + 1..ts.len() - 1];
    let parts: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

/// Microseconds from the agent applying assignment set `generation` to starting `id`.
fn start_us(n: &AgentNode, generation: u64, id: &str) -> f64 {
    let applied = log_lines(n, "applied assignments")
        .into_iter()
        .find(|l| l["fields"]["generation"] == generation)
        .unwrap_or_else(|| panic!("no `applied assignments` of generation {generation}"));
    let started = log_lines(n, "started")
        .into_iter()
        .find(|l| l["fields"]["container"] == id)
        .unwrap_or_else(|| panic!("no `started` line of {id}"));
    (log_seconds(&started) - log_seconds(&applied)) * 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// An assignment with three named volumes, three configs and three secrets.
fn three_of_each(id: &str) -> Assignment {
    let mut a = assignment(id, IMAGE);
    a.command = sh("exec sleep 1000");
    for i in 0..3 {
        a.volumes.push(VolumeMount {
            name: format!("v{i}"),
            path: format!("/vol/{i}"),
            read_only: false,
        });
        a.configs.push(ConfigMount {
            name: format!("c{i}"),
            path: format!("/etc/c{i}.conf"),
            mode: 0,
            version: 1,
        });
        a.secrets.push(SecretMount {
            name: format!("s{i}"),
            path: String::new(),
            version: 1,
        });
    }
    a
}

/// Reports (does not assert) how much the nine mounts add to a start: the agent's own
/// `applied assignments` → `started` log lines, alternating plain and full containers.
#[test]
fn nine_mounts_all_appear_and_their_start_cost_is_reported() {
    let sched = FakeScheduler::start();
    let opts = AgentOptions {
        env: vec![(
            "BERTH_LOG".into(),
            "info,berth_agent::containers=debug".into(),
        )],
        ..Default::default()
    };
    let n = node(&sched, "nine", "10.93.3.0/24", opts);
    let values = |kind: &str| -> Vec<FileContent> {
        (0..3)
            .map(|i| content(&format!("{kind}{i}"), 1, &format!("{kind}-value-{i}")))
            .collect()
    };
    sched.files(n.name(), values("c"), values("s"));
    let (mut plain, mut full) = (Vec::new(), Vec::new());
    // benches/files.sh asks for more rounds (with release binaries).
    let rounds = berth_tests::bench::env_usize("BENCH_ROUNDS", 7);
    for round in 0..rounds {
        for with_mounts in [false, true] {
            let id = format!("{}-{round}", if with_mounts { "full" } else { "plain" });
            let a = if with_mounts {
                three_of_each(&id)
            } else {
                let mut a = assignment(&id, IMAGE);
                a.command = sh("exec sleep 1000");
                a
            };
            let generation = sched.assign(n.name(), vec![a]);
            sched.wait_state(n.name(), &id, ContainerState::Running, WAIT);
            if with_mounts && round == 0 {
                let mounts = exec_ok(&n, &id, &["cat", "/proc/mounts"]);
                for target in [
                    "/vol/0",
                    "/vol/2",
                    "/etc/c0.conf",
                    "/etc/c2.conf",
                    "/run/secrets",
                ] {
                    assert!(
                        mounts.contains(&format!(" {target} ")),
                        "{target}:\n{mounts}"
                    );
                }
                assert_eq!(exec_ok(&n, &id, &["cat", "/run/secrets/s2"]), "s-value-2");
                assert_eq!(exec_ok(&n, &id, &["cat", "/etc/c1.conf"]), "c-value-1");
            }
            sched.assign(n.name(), vec![]);
            sched.wait_gone(n.name(), &id, WAIT);
            let us = start_us(&n, generation, &id);
            if with_mounts {
                full.push(us)
            } else {
                plain.push(us)
            }
        }
    }
    let storage: Vec<f64> = log_lines(&n, "storage ready")
        .iter()
        .filter(|l| {
            l["fields"]["container"]
                .as_str()
                .is_some_and(|c| c.starts_with("full"))
        })
        .map(|l| l["fields"]["storage_us"].as_f64().unwrap())
        .collect();
    eprintln!(
        "assignment -> started, median of {}: none {:.0} us, 3 volumes + 3 configs + 3 secrets \
         {:.0} us (added {:.0} us); the agent's storage step alone: median {:.0} us",
        plain.len(),
        median(plain.clone()),
        median(full.clone()),
        median(full) - median(plain),
        median(storage)
    );
}
