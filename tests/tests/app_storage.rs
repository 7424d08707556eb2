//! Volumes, configs and secrets end to end: a real berth-scheduler, real agents on the node
//! fabric, real containers. Debian's redis-server keeps its data in a named volume through a
//! kill and a new revision; a config update rolls every replica and a rollback brings the old
//! content back; a secret is on a 0400 tmpfs in the one container that uses it and nowhere in
//! the store, the logs, the CLI's output or any node's disk.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_proto::v1::config_service_client::ConfigServiceClient;
use berth_proto::v1::secret_service_client::SecretServiceClient;
use berth_proto::v1::*;
use berth_tests::agent_node::AgentNode;
use berth_tests::cluster::{
    DeployApi, Fabric, STORE_ENV, SchedulerProc, all_ready, start_nodes_with,
};
use berth_tests::{Berth, binary, busybox_image, debian_image, files_holding, poll_until};

const BUSYBOX: &str = "files-busybox:1";
const DEBIAN: &str = "files-debian:1";
const WAIT: Duration = Duration::from_secs(120);

struct Cluster {
    sched: SchedulerProc,
    nodes: Vec<AgentNode>,
    _fabric: Fabric,
    api: DeployApi,
    _key_dir: tempfile::TempDir,
}

/// A scheduler with a fresh secrets key and `count` agents, each with the busybox image and,
/// with `debian`, the Debian image too (stores on tmpfs: Debian's layer unpacks in seconds
/// there). Node `i` has the label `slot=i`.
fn cluster(count: usize, debian: bool) -> Cluster {
    let key_dir = tempfile::tempdir().expect("a key dir");
    let key = key_dir.path().join("secrets.key");
    let init = Berth::new()
        .cmd(["secret", "init-key", "--out"])
        .arg(&key)
        .output()
        .expect("berth secret init-key");
    assert!(init.status.success(), "init-key: {init:?}");
    let sched = SchedulerProc::start(&["--secrets-key", key.to_str().expect("utf-8 path")]);
    let mut fabric = Fabric::new();
    let nodes = start_nodes_with(&sched.endpoint(), &mut fabric, count, "f", |i, opts| {
        let berth = if debian {
            Berth::new_in(Path::new("/dev/shm"))
        } else {
            Berth::new()
        };
        busybox_image(&berth, BUSYBOX);
        if debian {
            debian_image(&berth, DEBIAN);
        }
        opts.labels.push(("slot".into(), i.to_string()));
        berth
    });
    let api = DeployApi::new(&sched.endpoint(), WAIT);
    poll_until("every node ready", WAIT, || {
        let listed = api.nodes();
        (listed.len() == count && listed.iter().all(|n| n.ready)).then_some(())
    });
    Cluster {
        sched,
        nodes,
        _fabric: fabric,
        api,
        _key_dir: key_dir,
    }
}

impl Cluster {
    fn node(&self, name: &str) -> &AgentNode {
        berth_tests::agent_node::named(&self.nodes, name)
    }

    /// `sh -c SCRIPT` in container `id` on node `node`, which must succeed; its stdout.
    fn exec(&self, node: &str, id: &str, script: &str) -> String {
        self.node(node).sh(id, script)
    }

    /// `berth ARGS` against the scheduler, with `stdin` fed in; the output, checked.
    fn berth(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        use std::io::Write as _;
        let mut cmd = self.sched.berth(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("berth");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.unwrap_or_default())
            .expect("write stdin");
        drop(input);
        let out = child.wait_with_output().expect("berth output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "berth {args:?}: {text}");
        text
    }

    fn configs(&self) -> ConfigServiceClient<tonic::transport::Channel> {
        self.api
            .block_on(ConfigServiceClient::connect(self.sched.endpoint()))
            .expect("connect ConfigService")
    }

    fn secrets(&self) -> SecretServiceClient<tonic::transport::Channel> {
        self.api
            .block_on(SecretServiceClient::connect(self.sched.endpoint()))
            .expect("connect SecretService")
    }
}

/// The one replica of `d`: (node, container id).
fn only_replica(d: &Deployment) -> (String, String) {
    assert_eq!(d.replica_status.len(), 1, "{d:?}");
    let r = &d.replica_status[0];
    (r.node.clone(), r.container_id.clone())
}

/// SIGKILLs container `id`'s process from the host (a crash, not a stop).
fn kill_container(node: &AgentNode, id: &str) {
    let state = Command::new(binary("berth-runtime"))
        .arg("--root")
        .arg(node.runtime_root())
        .args(["state", id])
        .output()
        .expect("berth-runtime state");
    assert!(state.status.success(), "state {id}: {state:?}");
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).expect("state JSON");
    let pid = state["pid"].as_u64().expect("a pid");
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
}

fn redis(revision_note: &str) -> DeploymentSpec {
    DeploymentSpec {
        name: "redis".into(),
        image: DEBIAN.into(),
        command: [
            "redis-server",
            "--dir",
            "/var/lib/redis",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ]
        .map(String::from)
        .into(),
        env: [("NOTE".to_string(), revision_note.to_string())].into(),
        replicas: 1,
        resources: Some(Resources {
            cpu_millis: 200,
            memory_bytes: 128 << 20,
        }),
        volumes: vec![VolumeMount {
            name: "redis-data".into(),
            path: "/var/lib/redis".into(),
            read_only: false,
        }],
        readiness: Some(Probe {
            check: Some(probe::Check::Exec(ExecCheck {
                command: ["redis-cli", "ping"].map(String::from).into(),
            })),
            period_ms: 300,
            ..Default::default()
        }),
        restart: Some(RestartPolicy {
            kind: restart_policy::Kind::Always as i32,
            ..Default::default()
        }),
        security: Some(SecurityContext {
            run_as: "redis".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_stateful_service_keeps_its_data_in_a_named_volume() {
    let c = cluster(2, true);
    c.api.apply(redis("one"));
    let d = c.api.wait("redis", "redis ready", |d| all_ready(d, 1));
    let (node, id) = only_replica(&d);
    let volumes = c
        .api
        .call(c.api.client.clone().list_volumes(ListVolumesRequest {}))
        .expect("ListVolumes")
        .volumes;
    let record = volumes
        .iter()
        .find(|v| v.name == "redis-data")
        .unwrap_or_else(|| panic!("no record of redis-data: {volumes:?}"));
    assert_eq!(record.node, node, "the volume lives where its replica ran");
    assert_eq!(
        c.exec(&node, &id, "redis-cli set greeting kept").trim(),
        "OK"
    );

    // A crash: the restart policy brings it back on the same node, with the data.
    kill_container(c.node(&node), &id);
    let d = c.api.wait("redis", "redis restarted and ready", |d| {
        all_ready(d, 1) && d.replica_status[0].restart_count >= 1
    });
    let (again, id) = only_replica(&d);
    assert_eq!(again, node);
    assert_eq!(c.exec(&node, &id, "redis-cli get greeting").trim(), "kept");

    // A new revision: a new container, on the node that holds the volume, with the data.
    c.api.apply(redis("two"));
    let d = c.api.wait("redis", "revision 2 ready", |d| {
        d.revision == 2 && all_ready(d, 1)
    });
    let (third, new_id) = only_replica(&d);
    assert_ne!(new_id, id, "a new revision runs a new container");
    assert_eq!(third, node, "the replica stays with its data");
    assert_eq!(
        c.exec(&node, &new_id, "redis-cli get greeting").trim(),
        "kept"
    );
    // The data is the node's volume, owned by the image's redis user (seeded from the image).
    let data = c.node(&node).data_dir().join("volumes/redis-data/_data");
    assert!(
        data.join("appendonlydir").exists() || data.join("dump.rdb").exists(),
        "{data:?}"
    );
    c.api.delete("redis");
}

/// A busybox reader of /etc/app/app.conf (placement spreads its replicas over the nodes).
fn reader(replicas: u32) -> DeploymentSpec {
    DeploymentSpec {
        name: "reader".into(),
        image: BUSYBOX.into(),
        command: ["sleep", "3600"].map(String::from).into(),
        replicas,
        resources: Some(Resources {
            cpu_millis: 100,
            memory_bytes: 16 << 20,
        }),
        configs: vec![ConfigMount {
            name: "app-conf".into(),
            path: "/etc/app/app.conf".into(),
            mode: 0o440,
            version: 0,
        }],
        readiness: Some(Probe {
            check: Some(probe::Check::Exec(ExecCheck {
                command: ["cat", "/etc/app/app.conf"].map(String::from).into(),
            })),
            period_ms: 200,
            ..Default::default()
        }),
        rollout: Some(RolloutSettings {
            progress_deadline_s: 60,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What every replica of `reader` reads from its config, one line per replica.
fn contents(c: &Cluster, d: &Deployment) -> Vec<String> {
    d.replica_status
        .iter()
        .map(|r| c.exec(&r.node, &r.container_id, "cat /etc/app/app.conf"))
        .collect()
}

#[test]
fn a_config_update_rolls_every_replica_and_a_rollback_restores_it() {
    let c = cluster(3, false);
    c.berth(&["config", "create", "app-conf"], Some(b"greeting=one\n"));
    c.api.apply(reader(3));
    let d = c.api.wait("reader", "3 readers ready", |d| all_ready(d, 3));
    let nodes: std::collections::BTreeSet<_> = d.replica_status.iter().map(|r| &r.node).collect();
    assert_eq!(nodes.len(), 3, "one reader per node: {d:?}");
    assert!(
        contents(&c, &d).iter().all(|s| s == "greeting=one\n"),
        "{d:?}"
    );
    let r = &d.replica_status[0];
    let stat = c.exec(&r.node, &r.container_id, "stat -c %a /etc/app/app.conf");
    assert_eq!(stat.trim(), "440");
    let write = c
        .node(&r.node)
        .exec(&r.container_id, &["sh", "-c", "echo x > /etc/app/app.conf"]);
    assert!(
        !write.status.success(),
        "the config is read-only: {write:?}"
    );

    // The update starts the rollout; time it until every replica reads the new content.
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(file.path(), "greeting=two\n").expect("write");
    let started = Instant::now();
    let out = c.berth(
        &[
            "config",
            "update",
            "app-conf",
            "--from-file",
            file.path().to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(
        out.contains("reader"),
        "update names the rolled deployment: {out}"
    );
    let d = c.api.wait("reader", "revision 2 on every replica", |d| {
        d.revision == 2 && all_ready(d, 3)
    });
    let took = started.elapsed();
    assert!(
        contents(&c, &d).iter().all(|s| s == "greeting=two\n"),
        "{d:?}"
    );
    eprintln!(
        "BENCH config update -> 3 replicas on 3 nodes running the new content: {} ms",
        took.as_millis()
    );
    let pinned = d.spec.as_ref().expect("spec").configs[0].version;
    assert_eq!(pinned, 2, "revision 2 pins config version 2");

    // Rollback: revision 3 with revision 1's spec, so config version 1 again.
    let mut api = c.api.client.clone();
    c.api
        .call(api.rollback(RollbackRequest {
            name: "reader".into(),
            to_revision: 1,
            ..Default::default()
        }))
        .expect("rollback");
    let d = c.api.wait("reader", "the rollback on every replica", |d| {
        d.revision == 3 && all_ready(d, 3)
    });
    assert!(
        contents(&c, &d).iter().all(|s| s == "greeting=one\n"),
        "{d:?}"
    );
    // A config in use cannot be removed.
    let mut configs = c.configs();
    let refused = c
        .api
        .block_on(configs.delete_config(DeleteFileRequest {
            name: "app-conf".into(),
        }))
        .expect_err("deleting a config in use");
    assert!(refused.message().contains("reader"), "{refused:?}");
    c.api.delete("reader");
}

/// A unique value nobody else writes: the secret's plaintext, to grep for.
fn marker() -> String {
    format!(
        "s3cr3t-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_nanos()
    )
}

fn consumer(node_slot: usize) -> DeploymentSpec {
    DeploymentSpec {
        name: "consumer".into(),
        image: BUSYBOX.into(),
        command: ["sleep", "3600"].map(String::from).into(),
        replicas: 1,
        node_selector: [("slot".to_string(), node_slot.to_string())].into(),
        secrets: vec![SecretMount {
            name: "db-password".into(),
            path: String::new(),
            version: 0,
        }],
        security: Some(SecurityContext {
            run_as: "1000:1000".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_secret_reaches_only_its_container_and_leaks_nowhere() {
    let c = cluster(3, false);
    let value = marker();
    c.berth(&["secret", "create", "db-password"], Some(value.as_bytes()));
    c.api.apply(consumer(1));
    let d = c
        .api
        .wait("consumer", "the consumer ready", |d| all_ready(d, 1));
    let (node, id) = only_replica(&d);
    assert_eq!(
        c.exec(&node, &id, "cat /run/secrets/db-password"),
        value,
        "the container reads the value"
    );
    let stat = c.exec(&node, &id, "stat -c '%a %u %g' /run/secrets/db-password");
    assert_eq!(
        stat.trim(),
        "400 1000 1000",
        "0400, owned by the process user"
    );
    let mounts = c.exec(&node, &id, "grep ' /run/secrets ' /proc/mounts");
    assert!(mounts.contains(" tmpfs "), "on a tmpfs: {mounts}");

    // Nowhere else: not in the store, nor on any node's disk, nor in a log.
    // (On etcd, tests/tests/configs_secrets.rs greps etcd's keys and values.)
    if std::env::var(STORE_ENV).as_deref() != Ok("etcd") {
        let bytes = std::fs::read(c.sched.data_dir().join("state.redb")).expect("state.redb");
        let found = bytes.windows(value.len()).any(|w| w == value.as_bytes());
        assert!(!found, "the plaintext is in the redb file");
    }
    assert!(
        !c.sched.log().contains(&value),
        "the scheduler log holds the secret"
    );
    for n in &c.nodes {
        assert!(
            !n.log().contains(&value),
            "agent {} logs the secret",
            n.name()
        );
        // Only on the private tmpfs of the one container that uses it (which grep does see).
        assert_eq!(
            files_holding(n.data_dir(), &value, "private"),
            "",
            "{}",
            n.name()
        );
        let anywhere = files_holding(n.data_dir(), &value, "none");
        if n.name() == node {
            assert!(
                anywhere.contains("/private/"),
                "not on the tmpfs? {anywhere}"
            );
        } else {
            assert_eq!(anywhere, "", "{} never ran it", n.name());
        }
    }
    // Nor in what the CLI shows of it or of the deployment.
    for args in [
        &["secret", "ls"][..],
        &["secret", "ls", "-o", "json"],
        &["secret", "inspect", "db-password"],
        &["secret", "inspect", "db-password", "-o", "json"],
        &["status", "consumer", "-o", "json"],
        &["history", "consumer", "-o", "json"],
    ] {
        let out = c.berth(args, None);
        assert!(
            !out.contains(&value),
            "berth {args:?} shows the secret: {out}"
        );
    }
    let info = c
        .api
        .block_on(c.secrets().get_secret(GetFileRequest {
            name: "db-password".into(),
            version: 0,
        }))
        .expect("GetSecret")
        .into_inner();
    assert_eq!(info.used_by, ["consumer"], "{info:?}");
    assert!(!format!("{info:?}").contains(&value));
    // Deleted from the node once no replica there needs it: the container's tmpfs is gone.
    let tmpfs_root = c.node(&node).container_dir(&id);
    c.api.delete("consumer");
    poll_until("the consumer's container removed", WAIT, || {
        (!tmpfs_root.exists()).then_some(())
    });
    for n in &c.nodes {
        assert_eq!(
            files_holding(n.data_dir(), &value, "none"),
            "",
            "{} keeps it",
            n.name()
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&tmpfs_root.display().to_string()),
        "the secrets tmpfs is still mounted"
    );
}
