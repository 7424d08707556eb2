//! berth-agent end to end: a real agent process per node, driven by a harness that speaks the
//! scheduler's side of the node protocol; real containers, cgroups and network namespaces.

use std::path::Path;
use std::time::Duration;

use berth_proto::v1::agent_service_client::AgentServiceClient;
use berth_proto::v1::{
    ContainerState, ExecCheck, ExecInput, ExecStart, HttpCheck, PortMapping, Probe, RegistryPull,
    Resources, RestartPolicy, exec_input, image_source, probe, restart_policy,
};
use berth_tests::agent_node::{AgentNode, AgentOptions, unique_node_name};
use berth_tests::fake_scheduler::{FakeScheduler, assignment, pod_route};
use berth_tests::{Berth, busybox_image};

const WAIT: Duration = Duration::from_secs(60);
const IMAGE: &str = "agent-busybox:1";

/// A node with the busybox image in its store.
fn node(sched: &FakeScheduler, base: &str, cidr: &str, mut opts: AgentOptions) -> AgentNode {
    // busybox's sleep as a container's init ignores SIGTERM: do not wait 10 s for each.
    opts.extra_args
        .extend(["--stop-grace".to_string(), "1".to_string()]);
    let berth = Berth::new();
    busybox_image(&berth, IMAGE);
    let name = unique_node_name(base);
    sched.set_pod_cidr(&name, cidr);
    sched.assign(&name, vec![]);
    AgentNode::start_in(berth, sched, &name, opts)
}

fn cgroup_file(controller: &str, node: &str, id: &str, file: &str) -> String {
    let path = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("berth-agent")
        .join(node)
        .join(id)
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

const HTTPD: &str = "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www";

#[test]
fn assignment_runs_with_limits_network_and_a_published_port() {
    let sched = FakeScheduler::start();
    let n = node(&sched, "limits", "10.91.1.0/24", AgentOptions::default());
    let mut a = assignment("web-1", IMAGE);
    a.command = vec!["sh".into(), "-c".into(), HTTPD.into()];
    a.resources = Some(Resources {
        cpu_millis: 500,
        memory_bytes: 64 << 20,
    });
    a.pids_limit = 40;
    a.ports = vec![PortMapping {
        host_port: 18081,
        container_port: 8080,
        protocol: 0,
    }];
    sched.assign(n.name(), vec![a]);
    let st = sched.wait_state(n.name(), "web-1", ContainerState::Running, WAIT);
    assert!(st.ip.starts_with("10.91.1."), "{st:?}");
    assert!(st.pid > 0);
    assert_eq!(
        cgroup_file("memory", n.name(), "web-1", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        cgroup_file("cpu", n.name(), "web-1", "cpu.cfs_quota_us"),
        "50000"
    );
    assert_eq!(cgroup_file("pids", n.name(), "web-1", "pids.max"), "40");
    // Capacity counts what the assignment asks for.
    let hb = sched.wait_for(n.name(), "allocated capacity", WAIT, |h| {
        let alloc = h.capacity.as_ref()?.allocated?;
        (alloc.cpu_millis == 500).then_some(h.clone())
    });
    let cap = hb.capacity.unwrap();
    assert_eq!(cap.total.unwrap().cpu_millis, 2000);
    assert_eq!(cap.allocated.unwrap().memory_bytes, 64 << 20);
    // The published port, from the node's own loopback, and the container's address directly.
    let fetch = |url: &str| {
        berth_tests::poll_until(&format!("GET {url}"), WAIT, || {
            let out = n.exec_in_netns(&["curl", "-sSf", "-m", "3", url]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
    };
    assert_eq!(fetch("http://127.0.0.1:18081/"), "hello-from-web-1\n");
    assert_eq!(
        fetch(&format!("http://{}:8080/", st.ip)),
        "hello-from-web-1\n"
    );
    // Unassigned: stopped, removed, reported gone.
    sched.assign(n.name(), vec![]);
    sched.wait_gone(n.name(), "web-1", WAIT);
    assert!(!n.container_dir("web-1").exists());
    assert!(
        !Path::new("/sys/fs/cgroup/memory/berth-agent")
            .join(n.name())
            .join("web-1")
            .exists()
    );
}

#[test]
fn containers_survive_kill_9_of_the_agent_and_are_adopted_not_restarted() {
    let sched = FakeScheduler::start();
    let mut n = node(&sched, "adopt", "10.91.2.0/24", AgentOptions::default());
    let mut keeps = assignment("keeps", IMAGE);
    keeps.command = vec!["sleep".into(), "1000".into()];
    let mut ends = assignment("ends", IMAGE);
    // Ends on its own while the agent is down: its exit code must still be reported.
    ends.command = vec![
        "sh".into(),
        "-c".into(),
        "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 42".into(),
    ];
    sched.assign(n.name(), vec![keeps, ends]);
    let before = sched.wait_state(n.name(), "keeps", ContainerState::Running, WAIT);
    let ends_pid = sched
        .wait_state(n.name(), "ends", ContainerState::Running, WAIT)
        .pid;
    n.kill9();
    // With the agent gone, one container keeps running and the other ends.
    assert!(Path::new(&format!("/proc/{}", before.pid)).exists());
    let go = Path::new(&format!("/proc/{ends_pid}/root/tmp/go")).to_path_buf();
    std::fs::write(&go, "").expect("signal the container through its root");
    berth_tests::poll_until("the container to end", WAIT, || {
        (!Path::new(&format!("/proc/{ends_pid}")).exists()).then_some(())
    });
    let registrations = sched.registrations(n.name()).len();
    n.restart();
    sched.wait_registrations(n.name(), registrations + 1, WAIT);
    let ended = sched.wait_for(
        n.name(),
        "the exit that happened while the agent was down",
        WAIT,
        |h| {
            h.containers
                .iter()
                .find(|c| c.container_id == "ends" && c.state == ContainerState::Exited as i32)
                .cloned()
        },
    );
    assert_eq!(ended.exit_code, 42);
    let after = sched.wait_state(n.name(), "keeps", ContainerState::Running, WAIT);
    // Adopted: the same process, never started a second time.
    assert_eq!(after.pid, before.pid);
    assert_eq!(after.started_at_ms, before.started_at_ms);
    assert_eq!(after.restart_count, 0);
    let out = std::process::Command::new("pgrep")
        .args(["-f", "-c", "berth-shim --id keeps "])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "one shim for keeps"
    );
    sched.assign(n.name(), vec![]);
    sched.wait_gone(n.name(), "keeps", WAIT);
    sched.wait_gone(n.name(), "ends", WAIT);
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

#[test]
fn restart_policies_back_off_and_report_a_crash_loop() {
    let sched = FakeScheduler::start();
    let opts = AgentOptions {
        restart_backoff_base_ms: Some(100),
        ..Default::default()
    };
    let n = node(&sched, "restart", "10.91.3.0/24", opts);
    let mut crashing = assignment("crashing", IMAGE);
    crashing.command = sh("echo attempt; exit 3");
    crashing.restart = Some(RestartPolicy {
        kind: restart_policy::Kind::Always as i32,
        max_retries: 0,
    });
    let mut limited = assignment("limited", IMAGE);
    limited.command = sh("exit 5");
    limited.restart = Some(RestartPolicy {
        kind: restart_policy::Kind::OnFailure as i32,
        max_retries: 2,
    });
    let mut done = assignment("done", IMAGE);
    done.command = sh("exit 0");
    done.restart = Some(RestartPolicy {
        kind: restart_policy::Kind::OnFailure as i32,
        max_retries: 5,
    });
    sched.assign(n.name(), vec![crashing, limited, done]);
    let looping = sched.wait_for(n.name(), "a crash loop", WAIT, |h| {
        h.containers
            .iter()
            .find(|c| {
                c.container_id == "crashing"
                    && c.reason == "CrashLoopBackOff"
                    && c.restart_count >= 2
            })
            .cloned()
    });
    assert_eq!(looping.exit_code, 3);
    assert!(looping.log_tail.contains("attempt"), "{looping:?}");
    let gave_up = sched.wait_for(n.name(), "on-failure to give up", WAIT, |h| {
        h.containers
            .iter()
            .find(|c| c.container_id == "limited" && c.message.contains("not restarted"))
            .cloned()
    });
    assert_eq!(gave_up.restart_count, 2);
    assert_eq!(gave_up.exit_code, 5);
    assert_eq!(gave_up.state, ContainerState::Exited as i32);
    let completed = sched.wait_for(n.name(), "a clean exit to stay down", WAIT, |h| {
        h.containers
            .iter()
            .find(|c| c.container_id == "done" && c.reason == "Completed")
            .cloned()
    });
    assert_eq!(completed.restart_count, 0);
    // The backoff doubles: attempts are spaced out, not a tight loop.
    let starts: Vec<i64> = sched
        .events(n.name())
        .iter()
        .filter_map(|e| e.status.as_ref())
        .filter(|s| s.container_id == "crashing" && s.state == ContainerState::Running as i32)
        .map(|s| s.started_at_ms)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(starts.len() >= 3, "{starts:?}");
    let gaps: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[1] > gaps[0], "later restarts wait longer: {gaps:?}");
}

#[test]
fn readiness_and_liveness_probes_drive_status_and_restarts() {
    let sched = FakeScheduler::start();
    let opts = AgentOptions {
        restart_backoff_base_ms: Some(100),
        ..Default::default()
    };
    let n = node(&sched, "probes", "10.91.4.0/24", opts);
    let probe = |check| Probe {
        check: Some(check),
        period_ms: 200,
        timeout_ms: 1000,
        failure_threshold: 2,
        ..Default::default()
    };
    // Ready only once /tmp/ready exists (an exec probe), serving http and tcp on 8080.
    let mut web = assignment("web", IMAGE);
    web.command = sh(HTTPD);
    web.readiness = Some(probe(probe::Check::Exec(ExecCheck {
        command: vec!["test".into(), "-e".into(), "/tmp/ready".into()],
    })));
    web.liveness = Some(probe(probe::Check::Http(HttpCheck {
        port: 8080,
        path: "/index.html".into(),
    })));
    web.restart = Some(RestartPolicy {
        kind: restart_policy::Kind::Always as i32,
        max_retries: 0,
    });
    sched.assign(n.name(), vec![web]);
    let running = sched.wait_state(n.name(), "web", ContainerState::Running, WAIT);
    assert!(!running.ready);
    let out = n
        .berth()
        .cmd([
            "exec",
            "--agent",
            &n.endpoint_url(),
            "web",
            "touch",
            "/tmp/ready",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    sched.wait_for(n.name(), "web to become ready", WAIT, |h| {
        h.containers
            .iter()
            .find(|c| c.container_id == "web" && c.ready)
            .cloned()
    });
    // Breaking the liveness check (the page disappears) restarts the container.
    let out = n
        .berth()
        .cmd([
            "exec",
            "--agent",
            &n.endpoint_url(),
            "web",
            "rm",
            "/www/index.html",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let restarted = sched.wait_for(n.name(), "a restart after liveness failed", WAIT, |h| {
        h.containers
            .iter()
            .find(|c| {
                c.container_id == "web"
                    && c.restart_count >= 1
                    && c.state == ContainerState::Running as i32
            })
            .cloned()
    });
    assert_ne!(restarted.pid, running.pid);
    let liveness_failed = sched
        .events(n.name())
        .iter()
        .filter_map(|e| e.status.as_ref())
        .any(|s| s.container_id == "web" && s.message.contains("liveness probe failed"));
    assert!(liveness_failed, "the restart names the liveness failure");
}

/// The busybox image of `berth`'s store as an oci-archive at `path` (through skopeo).
fn export_archive(berth: &Berth, name: &str, path: &Path) {
    let layout = format!(
        "oci:{}:{name}",
        berth.data_dir.path().join("images").display()
    );
    berth_tests::skopeo_copy(&layout, &format!("oci-archive:{}", path.display()), &[]);
}

#[test]
fn images_are_imported_or_pulled_as_assigned_and_a_missing_one_is_refused() {
    let sched = FakeScheduler::start();
    let source = Berth::new();
    busybox_image(&source, IMAGE);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busybox.tar");
    export_archive(&source, IMAGE, &archive);
    let registry = berth_tests::Registry::start();
    let remote = format!("{}/agent/busybox:1", registry.host());
    let layout = format!(
        "oci:{}:{IMAGE}",
        source.data_dir.path().join("images").display()
    );
    berth_tests::skopeo_copy(
        &layout,
        &format!("docker://{remote}"),
        &["--dest-tls-verify=false"],
    );

    // A node whose store starts empty.
    let name = unique_node_name("images");
    sched.set_pod_cidr(&name, "10.91.5.0/24");
    sched.assign(&name, vec![]);
    let n = AgentNode::start(&sched, &name, AgentOptions::default());
    let mut imported = assignment("imported", "imported/busybox:1");
    imported.image.as_mut().unwrap().fetch = Some(image_source::Fetch::ImportPath(
        archive.to_string_lossy().into_owned(),
    ));
    imported.command = vec!["sleep".into(), "1000".into()];
    let mut pulled = assignment("pulled", &remote);
    pulled.image.as_mut().unwrap().fetch = Some(image_source::Fetch::Pull(RegistryPull::default()));
    pulled.command = vec!["sleep".into(), "1000".into()];
    let missing = assignment("missing", "nowhere/none:1");
    let mut unreachable = assignment("unreachable", "127.0.0.1:9/none:1");
    unreachable.image.as_mut().unwrap().fetch =
        Some(image_source::Fetch::Pull(RegistryPull::default()));
    // A tag the registry does not have: the registry's typed NotFound, not a generic failure.
    let mut no_tag = assignment("notag", &format!("{}/agent/busybox:nope", registry.host()));
    no_tag.image.as_mut().unwrap().fetch = Some(image_source::Fetch::Pull(RegistryPull::default()));
    sched.assign(
        n.name(),
        vec![imported, pulled, missing, unreachable, no_tag],
    );
    sched.wait_state(n.name(), "imported", ContainerState::Running, WAIT);
    sched.wait_state(n.name(), "pulled", ContainerState::Running, WAIT);
    let missing = sched.wait_state(n.name(), "missing", ContainerState::Failed, WAIT);
    assert_eq!(missing.reason, "ImagePullBackOff");
    assert!(
        missing.message.contains("nowhere/none:1")
            && missing.message.contains("not in the node's image store"),
        "{missing:?}"
    );
    let unreachable = sched.wait_state(n.name(), "unreachable", ContainerState::Failed, WAIT);
    assert!(
        unreachable.message.contains("pull failed"),
        "{unreachable:?}"
    );
    let no_tag = sched.wait_state(n.name(), "notag", ContainerState::Failed, WAIT);
    assert_eq!(no_tag.reason, "ImagePullBackOff");
    assert!(
        no_tag.message.contains("pull failed")
            && no_tag.message.contains("manifest nope not found"),
        "{no_tag:?}"
    );
    // The failed ones left nothing behind, the others keep running.
    assert!(!n.container_dir("missing").join("config.json").exists());
    let names = n.berth().image_names();
    assert!(
        names.contains(&remote) && names.contains(&"imported/busybox:1".to_string()),
        "{names:?}"
    );
}

#[test]
fn impossible_resources_and_taken_ports_are_refused_with_the_reason() {
    let sched = FakeScheduler::start();
    let n = node(&sched, "refuse", "10.91.6.0/24", AgentOptions::default());
    let mut first = assignment("first", IMAGE);
    first.command = vec!["sleep".into(), "1000".into()];
    first.ports = vec![PortMapping {
        host_port: 18090,
        container_port: 80,
        protocol: 0,
    }];
    sched.assign(n.name(), vec![first.clone()]);
    sched.wait_state(n.name(), "first", ContainerState::Running, WAIT);
    let mut same_port = assignment("same-port", IMAGE);
    same_port.command = vec!["sleep".into(), "1000".into()];
    same_port.ports = vec![PortMapping {
        host_port: 18090,
        container_port: 81,
        protocol: 0,
    }];
    let mut huge = assignment("huge", IMAGE);
    huge.resources = Some(Resources {
        cpu_millis: 64_000,
        memory_bytes: 1 << 40,
    });
    let bad_id = assignment("../escape", IMAGE);
    sched.assign(n.name(), vec![first, same_port, huge, bad_id]);
    let port = sched.wait_state(n.name(), "same-port", ContainerState::Failed, WAIT);
    assert_eq!(port.reason, "PortInUse");
    assert!(
        port.message.contains("18090") && port.message.contains("first"),
        "{port:?}"
    );
    let huge = sched.wait_state(n.name(), "huge", ContainerState::Failed, WAIT);
    assert!(
        huge.message.contains("resources") && huge.message.contains("64000m"),
        "{huge:?}"
    );
    let bad = sched.wait_state(n.name(), "../escape", ContainerState::Failed, WAIT);
    assert!(bad.message.contains("container_id"), "{bad:?}");
    assert!(!n.data_dir().join("agent/escape").exists());
    // The refused ones take no capacity; the agent keeps serving.
    let hb = sched.wait_for(n.name(), "capacity of the one that runs", WAIT, |h| {
        Some(h.clone())
    });
    assert_eq!(hb.capacity.unwrap().allocated.unwrap().cpu_millis, 100);
    let out = n
        .berth()
        .cmd(["ps", "--agent", &n.endpoint_url(), "-a", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn logs_exec_and_ps_reach_containers_through_the_agent_and_bad_requests_get_a_status() {
    let sched = FakeScheduler::start();
    let n = node(&sched, "cli", "10.91.7.0/24", AgentOptions::default());
    let mut talk = assignment("talk", IMAGE);
    talk.command = sh("for i in 1 2 3; do echo line-$i; done; echo to-stderr >&2; exec sleep 1000");
    sched.assign(n.name(), vec![talk]);
    sched.wait_state(n.name(), "talk", ContainerState::Running, WAIT);
    let agent = n.endpoint_url();
    let berth = |args: &[&str]| n.berth().cmd(args).output().unwrap();
    let logs = berth_tests::poll_until("the container's output", WAIT, || {
        let out = berth(&["logs", "--agent", &agent, "talk"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("to-stderr").then_some(text)
    });
    assert_eq!(logs, "line-1\nline-2\nline-3\nto-stderr\n");
    let tail = berth(&["logs", "--agent", &agent, "--tail", "2", "talk"]);
    assert_eq!(String::from_utf8_lossy(&tail.stdout), "line-3\nto-stderr\n");
    let exec = berth(&[
        "exec",
        "--agent",
        &agent,
        "talk",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 6",
    ]);
    assert_eq!(exec.status.code(), Some(6));
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&exec.stderr), "err\n");
    let mut input = n.berth().cmd([
        "exec",
        "-i",
        "--agent",
        &agent,
        "talk",
        "sh",
        "-c",
        "read x; echo got-$x",
    ]);
    input
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = input.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"shout\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got-shout\n");
    let ps = berth(&["ps", "--agent", &agent, "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(rows[0]["id"], "talk");
    assert_eq!(rows[0]["state"], "running");
    assert_eq!(rows[0]["node"], n.name());
    // Bad requests: a clear error naming the object, and the agent serves on.
    let missing = berth(&["logs", "--agent", &agent, "nope"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no container nope"),
        "{missing:?}"
    );
    let bad = berth(&["exec", "--agent", &agent, "../etc", "true"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("container_id"),
        "{bad:?}"
    );
    let long = "x".repeat(100 << 10);
    let big = berth(&["exec", "--agent", &agent, "talk", "echo", &long]);
    assert!(
        String::from_utf8_lossy(&big.stderr).contains("longer than"),
        "{big:?}"
    );
    // A message over the protocol's size limit is refused by gRPC, not read into memory.
    let code = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = AgentServiceClient::connect(agent.clone()).await.unwrap();
        let start = ExecInput {
            msg: Some(exec_input::Msg::Start(ExecStart {
                container_id: "talk".into(),
                command: vec!["x".repeat(5 << 20)],
                ..Default::default()
            })),
        };
        let outcome = client
            .max_encoding_message_size(64 << 20)
            .exec(tokio_stream::iter(vec![start]))
            .await;
        match outcome {
            Ok(response) => {
                let mut stream = response.into_inner();
                stream.message().await.expect_err("an error status").code()
            }
            Err(status) => status.code(),
        }
    });
    assert_eq!(code, tonic::Code::OutOfRange, "oversized message");
    let ok = berth(&["ps", "--agent", &agent, "-o", "json"]);
    assert!(ok.status.success(), "the agent still serves: {ok:?}");
}

#[test]
fn scheduler_outage_keeps_containers_running_and_the_agent_resyncs() {
    let mut sched = FakeScheduler::start();
    let n = node(&sched, "outage", "10.91.8.0/24", AgentOptions::default());
    let mut a = assignment("steady", IMAGE);
    a.command = vec!["sleep".into(), "1000".into()];
    sched.assign(n.name(), vec![a.clone()]);
    let before = sched.wait_state(n.name(), "steady", ContainerState::Running, WAIT);
    let registrations = sched.registrations(n.name()).len();
    sched.stop();
    // The container does not notice.
    assert!(Path::new(&format!("/proc/{}", before.pid)).exists());
    sched.restart_on_same_port();
    sched.wait_registrations(n.name(), registrations + 1, WAIT);
    // The same assignment again after the outage: nothing is started twice.
    sched.assign(n.name(), vec![a]);
    let after = sched.wait_for(n.name(), "a heartbeat after the outage", WAIT, |h| {
        h.containers
            .iter()
            .find(|c| c.container_id == "steady")
            .cloned()
    });
    assert_eq!(after.pid, before.pid);
    assert_eq!(after.restart_count, 0);
    assert_eq!(after.state, ContainerState::Running as i32);
}

/// Links the node network namespaces of two nodes with a veth pair: `a_ip` and `b_ip` on
/// 10.99.<net>.0/24.
fn link_nodes(a: &AgentNode, b: &AgentNode, net: u8) -> (String, String) {
    let (va, vb) = (
        format!("ln{}a{net}", std::process::id() % 100_000),
        format!("ln{}b{net}", std::process::id() % 100_000),
    );
    let ip = |args: &[&str]| berth_tests::run_ok(std::process::Command::new("ip").args(args));
    ip(&[
        "link",
        "add",
        &va,
        "netns",
        a.netns_name(),
        "type",
        "veth",
        "peer",
        "name",
        &vb,
        "netns",
        b.netns_name(),
    ]);
    let (a_ip, b_ip) = (format!("10.99.{net}.1"), format!("10.99.{net}.2"));
    ip(&[
        "-n",
        a.netns_name(),
        "addr",
        "add",
        &format!("{a_ip}/24"),
        "dev",
        &va,
    ]);
    ip(&[
        "-n",
        b.netns_name(),
        "addr",
        "add",
        &format!("{b_ip}/24"),
        "dev",
        &vb,
    ]);
    ip(&["-n", a.netns_name(), "link", "set", &va, "up"]);
    ip(&["-n", b.netns_name(), "link", "set", &vb, "up"]);
    (a_ip, b_ip)
}

#[test]
fn containers_reach_each_other_on_one_node_across_nodes_and_outside() {
    let sched = FakeScheduler::start();
    let a = node(&sched, "neta", "10.92.1.0/24", AgentOptions::default());
    let b = node(&sched, "netb", "10.92.2.0/24", AgentOptions::default());
    let (a_ip, b_ip) = link_nodes(&a, &b, 1);
    let serve = |id: &str| {
        let mut s = assignment(id, IMAGE);
        s.command = sh(HTTPD);
        s
    };
    sched.assign(a.name(), vec![serve("a1"), serve("a2")]);
    sched.assign(b.name(), vec![serve("b1")]);
    sched.wait_state(a.name(), "a1", ContainerState::Running, WAIT);
    let a2 = sched.wait_state(a.name(), "a2", ContainerState::Running, WAIT);
    let b1 = sched.wait_state(b.name(), "b1", ContainerState::Running, WAIT);
    let agent_a = a.endpoint_url();
    // An HTTP GET from inside a container with busybox nc (busybox's static wget crashes
    // resolving names without NSS libraries); the body is the last line.
    let fetch = |from: &str, ip: &str| {
        let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 8080");
        berth_tests::poll_until(&format!("{from} GET {ip}"), WAIT, || {
            let out = a
                .berth()
                .cmd(["exec", "--agent", &agent_a, from, "sh", "-c", &script])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .last()
                .filter(|l| l.starts_with("hello"))
                .map(str::to_string)
        })
    };
    // Outside the pod network (the other node's own address), before that node has a route
    // back to these pods: only NAT lets the answer return, and it shows as a's address.
    let listener = accept_in(&b.netns_path(), 9999);
    let (peer, sent) = std::thread::scope(|scope| {
        let accepted = scope.spawn(|| listener.join().unwrap());
        berth_tests::poll_until("a connection out of the pod network", WAIT, || {
            let out = a
                .berth()
                .cmd([
                    "exec",
                    "--agent",
                    &agent_a,
                    "a1",
                    "sh",
                    "-c",
                    &format!("echo from-a1 | nc -w 2 {b_ip} 9999"),
                ])
                .output()
                .unwrap();
            out.status.success().then_some(())
        });
        accepted.join().unwrap()
    });
    assert_eq!(sent, "from-a1\n");
    assert_eq!(
        peer.ip().to_string(),
        a_ip,
        "masqueraded to the node's address"
    );
    sched.routes(a.name(), vec![pod_route(b.name(), "10.92.2.0/24", &b_ip)]);
    sched.routes(b.name(), vec![pod_route(a.name(), "10.92.1.0/24", &a_ip)]);
    // Same node, by address; across nodes through the routes.
    assert_eq!(fetch("a1", &a2.ip), "hello-from-a2");
    assert_eq!(fetch("a1", &b1.ip), "hello-from-b1");
}

#[test]
fn teardown_leaves_no_veth_netns_mount_cgroup_or_lease() {
    let sched = FakeScheduler::start();
    let n = node(&sched, "clean", "10.91.9.0/24", AgentOptions::default());
    let mut a = assignment("gone", IMAGE);
    a.command = vec!["sleep".into(), "1000".into()];
    a.ports = vec![PortMapping {
        host_port: 18095,
        container_port: 80,
        protocol: 1,
    }];
    sched.assign(n.name(), vec![a]);
    sched.wait_state(n.name(), "gone", ContainerState::Running, WAIT);
    let links = |n: &AgentNode| {
        String::from_utf8_lossy(&n.exec_in_netns(&["ip", "-o", "link"]).stdout).into_owned()
    };
    let before = links(&n);
    assert_eq!(
        before.matches("@if").count(),
        1,
        "one veth while it runs: {before}"
    );
    let mounts = || std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let data = n.data_dir().to_string_lossy().into_owned();
    assert!(mounts().contains(&data), "its rootfs and netns are mounted");
    sched.assign(n.name(), vec![]);
    sched.wait_gone(n.name(), "gone", WAIT);
    let after = links(&n);
    assert_eq!(after.matches("@if").count(), 0, "no veth left: {after}");
    assert!(!mounts().contains(&data), "no mount left under {data}");
    assert_eq!(
        std::fs::read_dir(n.data_dir().join("agent/netns"))
            .unwrap()
            .count(),
        0
    );
    for c in ["memory", "cpu", "pids", "freezer"] {
        let dir = Path::new("/sys/fs/cgroup")
            .join(c)
            .join("berth-agent")
            .join(n.name())
            .join("gone");
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    let state = std::fs::read_to_string(n.data_dir().join("agent/net/state.json")).unwrap();
    assert!(
        !state.contains("\"gone\""),
        "no lease or port left: {state}"
    );
    let rules =
        String::from_utf8_lossy(&n.exec_in_netns(&["nft", "list", "ruleset"]).stdout).into_owned();
    assert!(!rules.contains("18095"), "{rules}");
    assert!(!n.data_dir().join("rootfs/gone").exists());
    assert!(!n.runtime_root().join("gone").exists());
}

#[test]
fn the_agent_serves_health_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let sched = FakeScheduler::start();
    let n = node(&sched, "health", "10.91.10.0/24", AgentOptions::default());
    let endpoint = n.endpoint_url();
    let (status, services) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(endpoint)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: "berth.v1.AgentService".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let services: Vec<String> = match reply.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection reply {other:?}"),
        };
        (status, services)
    });
    assert_eq!(status, ServingStatus::Serving as i32);
    assert!(
        services.contains(&"berth.v1.AgentService".to_string()),
        "{services:?}"
    );
    assert!(
        services.contains(&"grpc.health.v1.Health".to_string()),
        "{services:?}"
    );
}

/// Listens on `port` inside the network namespace at `netns` (bound before this returns) and
/// gives the first connection that sends something: its peer and what it sent.
fn accept_in(netns: &Path, port: u16) -> std::thread::JoinHandle<(std::net::SocketAddr, String)> {
    use std::io::Read as _;
    let ns = std::fs::File::open(netns).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // A thread of its own: setns changes only this thread's namespace.
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        ready_tx.send(()).unwrap();
        listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no connection on {port}"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) => panic!("accept: {e}"),
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut sent = String::new();
            let _ = stream.read_to_string(&mut sent);
            if !sent.is_empty() {
                return (peer, sent);
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the listener to bind");
    handle
}
