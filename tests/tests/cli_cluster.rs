//! The `berth` CLI's cluster commands end to end: deploy, status, nodes, ps, logs, history,
//! approve, reject, rollback, scale and delete against a real berth-scheduler and real agents,
//! and `berth up` as a whole one-node cluster. Specs are TOML files in a temp dir per test.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::agent_node::{AgentNode, unique_node_name};
use berth_tests::cluster::{Fabric, SchedulerProc, start_nodes};
use berth_tests::{Berth, binary, busybox_image, free_loopback_addr, poll_until, require_root};
use serde_json::Value;

const IMAGE: &str = "cli-busybox:1";
const WAIT: Duration = Duration::from_secs(90);
/// What `--timeout` the tests give `--wait`: shorter than the test's own time limit.
const TIMEOUT: &str = "120s";
const HTTPD: &str = "echo started-$VERSION; mkdir -p /www && echo hello-$VERSION-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www";

/// `berth`'s exit statuses for error kinds (README, "Exit statuses").
const EXIT_INVALID_ARGUMENT: i32 = 2;
const EXIT_NOT_FOUND: i32 = 5;
const EXIT_UNAVAILABLE: i32 = 7;

/// A berth command's outcome.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The spec of `hello`: a busybox httpd that prints `started-VERSION` first, a tcp readiness
/// probe on its exposed port, and `rollout` lines appended to its `[rollout]` table.
fn hello_toml(version: &str, replicas: u32, image: &str, rollout: &str) -> String {
    format!(
        r#"name = "hello"
image = "{image}"
replicas = {replicas}
cpu = "100m"
memory = "32m"
env = {{ VERSION = "{version}" }}
command = ["sh", "-c", '{HTTPD}']
ports = [{{ container = 8080 }}]
readiness = {{ tcp = 8080, period_ms = 200 }}

[rollout]
progress_deadline = "60s"
{rollout}
"#
    )
}

/// A scheduler, `count` agents linked by a fabric, and a dir for spec files.
struct Cluster {
    sched: SchedulerProc,
    nodes: Vec<AgentNode>,
    _fabric: Fabric,
    specs: tempfile::TempDir,
}

fn cluster(count: usize) -> Cluster {
    let sched = SchedulerProc::start(&["--reschedule-delay-ms", "500"]);
    let mut fabric = Fabric::new();
    let nodes = start_nodes(&sched, &mut fabric, count, "cli", IMAGE);
    let c = Cluster {
        sched,
        nodes,
        _fabric: fabric,
        specs: tempfile::Builder::new()
            .prefix("berth-cli-specs-")
            .tempdir()
            .expect("temp dir"),
    };
    poll_until("every node ready", WAIT, || {
        let nodes = c.json(&["nodes"]);
        let nodes = nodes.as_array()?;
        (nodes.len() == count && nodes.iter().all(|n| n["ready"] == true)).then_some(())
    });
    c
}

impl Cluster {
    /// Writes `text` to `name` in the specs dir.
    fn spec(&self, name: &str, text: &str) -> PathBuf {
        let path = self.specs.path().join(name);
        fs::write(&path, text).expect("write the spec");
        path
    }

    /// `berth SUBCOMMAND --scheduler ENDPOINT ARGS...`, run.
    fn berth(&self, args: &[&str]) -> Run {
        run(&mut self.sched.berth(args))
    }

    /// Like [`Self::berth`], which must exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let r = self.berth(args);
        assert_eq!(r.code, 0, "berth {args:?}: {r:?}");
        r.stdout
    }

    /// `berth ARGS... -o json`, which must succeed, parsed.
    fn json(&self, args: &[&str]) -> Value {
        let args: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
        let out = self.ok(&args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("berth {args:?}: bad JSON ({e}): {out}"))
    }

    /// `berth deploy -f FILE --wait --timeout ... EXTRA...`.
    fn deploy_wait(&self, file: &Path, extra: &[&str]) -> Run {
        let file = file.to_str().unwrap();
        let args: Vec<&str> = ["deploy", "-f", file, "--wait", "--timeout", TIMEOUT]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        self.berth(&args)
    }

    /// `berth status hello -o json` once `check` accepts it.
    fn wait_status(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        poll_until(what, WAIT, || {
            Some(self.json(&["status", "hello"])).filter(|s| check(s))
        })
    }

    /// `berth logs ID` of the current revision's first replica. (`berth logs hello` takes
    /// the scheduler's pick among every container the nodes still report for hello, old
    /// revisions' included.)
    fn replica_logs(&self) -> String {
        let s = self.json(&["status", "hello"]);
        let Some(replica) = s["replica_status"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["revision"] == s["revision"])
        else {
            return String::new();
        };
        self.ok(&["logs", replica["container_id"].as_str().unwrap()])
    }

    fn node_names(&self) -> BTreeSet<String> {
        self.nodes.iter().map(|n| n.name().to_string()).collect()
    }
}

/// Every replica of the status's current revision is ready, and there are `n` of them.
fn all_ready(s: &Value, n: usize) -> bool {
    let replicas = s["replica_status"].as_array().unwrap();
    replicas.len() == n
        && replicas
            .iter()
            .all(|r| r["ready"] == true && r["revision"] == s["revision"])
}

fn replica_revisions(s: &Value) -> BTreeSet<u64> {
    s["replica_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect()
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario whose steps build on each other, read top to bottom"
)]
fn deploy_then_status_nodes_ps_logs_and_history() {
    let c = cluster(2);
    let app = c.spec("app.toml", &hello_toml("v1", 2, IMAGE, ""));

    let r = c.deploy_wait(&app, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("hello: revision 1 applied"), "{r:?}");
    assert!(
        r.stdout.contains("hello revision 1: complete, 2/2 ready"),
        "{r:?}"
    );

    // The same file again changes nothing.
    let out = c.ok(&["deploy", "-f", app.to_str().unwrap()]);
    assert!(out.contains("hello: unchanged, still revision 1"), "{out}");
    let out = c.ok(&["deploy", "-f", app.to_str().unwrap(), "--wait"]);
    assert!(out.contains("hello: unchanged, revision 1"), "{out}");
    assert!(out.contains("complete"), "{out}");

    let s = c.json(&["status", "hello"]);
    assert_eq!(s["name"], "hello");
    assert_eq!(s["image"], IMAGE);
    assert_eq!(s["revision"], 1);
    assert_eq!(s["phase"], "complete");
    assert_eq!(s["ready_replicas"], 2);
    assert!(all_ready(&s, 2), "{s:#}");
    let replicas = s["replica_status"].as_array().unwrap();
    let on: BTreeSet<String> = replicas
        .iter()
        .map(|r| r["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on, c.node_names(), "one replica on each node: {s:#}");
    assert!(replicas.iter().all(|r| r["state"] == "running"), "{s:#}");
    let ids: BTreeSet<String> = replicas
        .iter()
        .map(|r| r["container_id"].as_str().unwrap().to_string())
        .collect();
    // The table form names the deployment and its replicas too.
    let table = c.ok(&["status", "hello"]);
    assert!(table.contains("phase:     complete"), "{table}");
    assert!(ids.iter().all(|id| table.contains(id.as_str())), "{table}");
    let all = c.json(&["status"]);
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all:#}");

    let nodes = c.json(&["nodes"]);
    let listed: BTreeSet<String> = nodes
        .as_array()
        .unwrap()
        .iter()
        .inspect(|n| assert_eq!(n["ready"], true, "{n:#}"))
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, c.node_names());
    let table = c.ok(&["nodes"]);
    assert!(
        c.node_names().iter().all(|n| table.contains(n.as_str())),
        "{table}"
    );

    let ps = c.json(&["ps"]);
    let rows = ps.as_array().unwrap();
    let ps_ids: BTreeSet<String> = rows
        .iter()
        .inspect(|row| {
            assert_eq!(row["deployment"], "hello", "{row:#}");
            assert_eq!(row["state"], "running", "{row:#}");
            assert_eq!(row["image"], IMAGE, "{row:#}");
            assert!(
                c.node_names().contains(row["node"].as_str().unwrap()),
                "{row:#}"
            );
        })
        .map(|row| row["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ps_ids, ids, "{ps:#}");

    // By deployment name (its first replica) and by container id.
    poll_until("the replica's output in berth logs", WAIT, || {
        let r = c.berth(&["logs", "hello"]);
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout.contains("started-v1").then_some(())
    });
    let id = ids.iter().next().unwrap();
    let r = c.berth(&["logs", id]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("started-v1"), "{r:?}");

    // explain through the scheduler: the container's agent reads its host's /proc. The facts
    // agree with this host's /proc (the nodes run here) and with the spec's limits.
    for target in [id.as_str(), "hello"] {
        let e = c.json(&["explain", target]);
        let node = replicas
            .iter()
            .find(|r| r["container_id"] == e["id"])
            .unwrap_or_else(|| panic!("explain {target} named no replica: {e:#}"))["node"]
            .clone();
        assert_eq!(e["source"], format!("node {}", node.as_str().unwrap()));
        let pid = e["pid"].as_u64().unwrap();
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cgroup.contains(e["id"].as_str().unwrap()), "{cgroup}");
        let net = e["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["kind"] == "net")
            .unwrap();
        let inode = fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        assert_eq!(
            inode.to_string_lossy(),
            format!("net:[{}]", net["inode"]),
            "{e:#}"
        );
        assert_eq!(net["shared"], false);
        assert_eq!(e["cgroup"]["memory"]["limit_bytes"], 32 << 20, "{e:#}");
        assert_eq!(e["cgroup"]["cpu"]["quota_us"], 10000, "{e:#}");
    }
    let text = c.ok(&["explain", id]);
    assert!(text.contains("32.0 MiB"), "{text}");
    let r = c.berth(&["explain", "no-such-thing"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("container or deployment no-such-thing"),
        "{r:?}"
    );

    let history = c.json(&["history", "hello"]);
    let revisions = history.as_array().unwrap();
    assert_eq!(revisions.len(), 1, "{history:#}");
    assert_eq!(revisions[0]["revision"], 1);
    assert_eq!(revisions[0]["image"], IMAGE);
    assert_eq!(revisions[0]["replicas"], 2);
    assert_eq!(revisions[0]["outcome"], "complete", "{history:#}");
}

#[test]
fn manual_approval_approve_and_reject() {
    let c = cluster(1);
    let v1 = c.spec("v1.toml", &hello_toml("v1", 1, IMAGE, ""));
    let r = c.deploy_wait(&v1, &[]);
    assert_eq!(r.code, 0, "{r:?}");

    // v2 waits for approval; v1 keeps serving meanwhile.
    let v2 = c.spec(
        "v2.toml",
        &hello_toml("v2", 1, IMAGE, "approval = \"manual\""),
    );
    let r = c.deploy_wait(&v2, &["--stop-at-approval"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("awaiting-approval"), "{r:?}");
    assert!(r.stdout.contains("berth approve hello"), "{r:?}");
    let s = c.json(&["status", "hello"]);
    assert_eq!(s["revision"], 2);
    assert_eq!(s["phase"], "awaiting-approval", "{s:#}");
    assert_eq!(replica_revisions(&s), [1].into(), "v1 serves: {s:#}");
    // With -o json --wait prints only the final event.
    let r = c.deploy_wait(&v2, &["--stop-at-approval", "-o", "json"]);
    assert_eq!(r.code, 3, "{r:?}");
    let event: Value = serde_json::from_str(&r.stdout).expect("one JSON event");
    assert_eq!(event["phase"], "awaiting-approval", "{event:#}");
    assert_eq!(event["revision"], 2);

    let r = c.berth(&["approve", "hello", "--wait", "--timeout", TIMEOUT]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("hello: approved, revision 2"), "{r:?}");
    assert!(r.stdout.contains("hello revision 2: complete"), "{r:?}");
    let s = c.wait_status("v2 serving", |s| s["revision"] == 2 && all_ready(s, 1));
    assert_eq!(s["phase"], "complete");
    // Nothing left to approve.
    let r = c.berth(&["approve", "hello"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.starts_with("berth: "), "{r:?}");

    // v3 waits too and is rejected: v2 stays.
    let v3 = c.spec(
        "v3.toml",
        &hello_toml("v3", 1, IMAGE, "approval = \"manual\""),
    );
    let r = c.deploy_wait(&v3, &["--stop-at-approval"]);
    assert_eq!(r.code, 3, "{r:?}");
    let r = c.berth(&["reject", "hello"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("hello: revision 3 rejected; revision 2 stays"),
        "{r:?}"
    );
    let s = c.json(&["status", "hello"]);
    assert_eq!(s["revision"], 2, "back to the stable revision: {s:#}");
    assert_eq!(s["stable_revision"], 2, "{s:#}");
    assert_eq!(s["phase"], "complete", "{s:#}");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("revision 3 rejected"),
        "{s:#}"
    );
    assert!(
        s["replica_status"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["revision"] == 2 && r["ready"] == true),
        "v2 still serves: {s:#}"
    );
    poll_until("v2's output in berth logs", WAIT, || {
        c.replica_logs().contains("started-v2").then_some(())
    });
    let history = c.json(&["history", "hello"]);
    let outcomes: Vec<(u64, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&(3, "rejected".to_string())),
        "{history:#}"
    );
    assert!(
        outcomes.contains(&(2, "complete".to_string())),
        "{history:#}"
    );
}

#[test]
fn broken_version_rolls_back_then_rollback_scale_and_delete() {
    let c = cluster(2);
    let v1 = c.spec("v1.toml", &hello_toml("v1", 2, IMAGE, ""));
    assert_eq!(c.deploy_wait(&v1, &[]).code, 0);
    let v2 = c.spec("v2.toml", &hello_toml("v2", 2, IMAGE, ""));
    let r = c.deploy_wait(&v2, &[]);
    assert_eq!(r.code, 0, "{r:?}");

    // An image no node has: the rollout fails fast and rolls back to v2 by itself.
    let broken = c.spec(
        "broken.toml",
        &hello_toml("v3", 2, "cli-busybox:does-not-exist", ""),
    );
    let r = c.deploy_wait(&broken, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    // Reported as revision 3's outcome, however fast it failed and was replaced by the
    // rollback's revision 4 (also before `--wait` started watching).
    assert!(
        r.stderr
            .starts_with("berth: rollout of hello revision 3: rolled-back"),
        "{r:?}"
    );
    assert!(r.stderr.contains("revision 4"), "{r:?}");
    assert!(r.stderr.contains("ImagePullBackOff"), "{r:?}");
    // --wait went on until the restored revision served again.
    assert!(
        r.stderr
            .contains("berth: hello: rolled back to revision 4, serving again (2/2 ready)"),
        "{r:?}"
    );
    let s = c.wait_status("the rollback to v2 to complete", |s| {
        s["phase"] == "complete" && all_ready(s, 2)
    });
    assert_eq!(s["revision"], 4, "a new revision: {s:#}");
    assert_eq!(s["image"], IMAGE, "the old spec: {s:#}");
    poll_until("v2's output after the rollback", WAIT, || {
        c.replica_logs().contains("started-v2").then_some(())
    });

    // Back to revision 1 (v1).
    let r = c.berth(&[
        "rollback",
        "hello",
        "--to",
        "1",
        "--wait",
        "--timeout",
        TIMEOUT,
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("hello: rolling back, revision 5"),
        "{r:?}"
    );
    assert!(r.stdout.contains("hello revision 5: complete"), "{r:?}");
    c.wait_status("revision 5 ready", |s| {
        s["revision"] == 5 && all_ready(s, 2)
    });
    poll_until("v1's output after rollback --to 1", WAIT, || {
        c.replica_logs().contains("started-v1").then_some(())
    });
    let r = c.berth(&["rollback", "hello", "--to", "99"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("99"), "{r:?}");

    // Scaling makes no new revision.
    let out = c.ok(&["scale", "hello", "3"]);
    assert!(out.contains("hello: scaled to 3 replicas"), "{out}");
    let s = c.wait_status("3 ready replicas", |s| all_ready(s, 3));
    assert_eq!(s["replicas"], 3);
    assert_eq!(s["revision"], 5);
    poll_until("3 running containers in berth ps", WAIT, || {
        (c.json(&["ps"]).as_array().unwrap().len() == 3).then_some(())
    });
    let r = c.berth(&["scale", "hello", "-1"]);
    assert_ne!(r.code, 0, "{r:?}");

    let out = c.ok(&["delete", "hello"]);
    assert!(out.contains("hello: deleted"), "{out}");
    let r = c.berth(&["status", "hello"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("not found"), "{r:?}");
    assert_eq!(c.json(&["status"]), serde_json::json!([]));
    poll_until("the containers to go", WAIT, || {
        c.json(&["ps", "-a"])
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    });
    let r = c.berth(&["delete", "hello"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("not found"), "{r:?}");
}

#[test]
fn deploy_wait_follows_a_rollback_until_the_old_revision_serves_again() {
    let c = cluster(1);
    // As many replicas as examples/broken.toml asks for (a rollback keeps that count).
    let v1 = c.spec("v1.toml", &hello_toml("v1", 3, IMAGE, ""));
    assert_eq!(c.deploy_wait(&v1, &[]).code, 0);
    // examples/broken.toml as shipped, on this test's image (it publishes no host port): it
    // exits at start, fails (crash loop, or its progress deadline) and is rolled back. With
    // max_surge 0 a good replica went first, so one is missing until the rollback's revision
    // is up again.
    let example = fs::read_to_string(berth_tests::workspace_root().join("examples/broken.toml"))
        .expect("examples/broken.toml");
    let broken = example.replace(r#"image = "hello:v2""#, &format!(r#"image = "{IMAGE}""#));
    assert!(
        !broken.contains("hello:v2") && !broken.contains("18080"),
        "examples/broken.toml changed; adapt this test:\n{example}"
    );
    let broken = c.spec("broken.toml", &broken);
    let r = c.deploy_wait(&broken, &[]);
    assert_eq!(
        r.code, 1,
        "a rolled-back rollout still fails the wait: {r:?}"
    );
    assert!(
        r.stderr
            .starts_with("berth: rollout of hello revision 2: rolled-back"),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("berth: hello: rolled back to revision 3, serving again (3/3 ready)"),
        "{r:?}"
    );
    // Serving when the wait returns, not some time later.
    let s = c.json(&["status", "hello"]);
    assert_eq!(s["revision"], 3, "{s:#}");
    assert_eq!(s["phase"], "complete", "{s:#}");
    assert!(all_ready(&s, 3), "{s:#}");
    poll_until("v1's output after the rollback", WAIT, || {
        c.replica_logs().contains("started-v1").then_some(())
    });
}

/// A deployment with service ports: `berth services` lists its virtual IP, its ports and its
/// ready replicas' pod IPs as endpoints; `berth status` shows the VIP; a scale-down drains
/// the removed replica out of the endpoints (bounded by the drain timeout: these agents do
/// not acknowledge service sets yet); deletion removes the service.
#[test]
fn services_list_the_virtual_ip_and_ready_endpoints() {
    let c = cluster(2);
    let text = hello_toml("v1", 2, IMAGE, "").replace(
        "ports = [",
        "service_ports = [{ port = 80, target = 8080, name = \"http\" }]\nports = [",
    );
    let app = c.spec("svc.toml", &text);
    let r = c.deploy_wait(&app, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let s = c.json(&["status", "hello"]);
    let vip = s["virtual_ip"].as_str().unwrap().to_string();
    assert!(
        vip.starts_with("10.96."),
        "a VIP from the default service network: {s:#}"
    );
    let pod_ips = |s: &Value| -> BTreeSet<String> {
        let replicas = s["replica_status"].as_array().unwrap().iter();
        replicas
            .map(|r| r["ip"].as_str().unwrap().to_string())
            .collect()
    };
    let endpoints = |svc: &Value| -> BTreeSet<String> {
        let listed = svc["endpoints"].as_array().unwrap().iter();
        listed
            .map(|e| e["ip"].as_str().unwrap().to_string())
            .collect()
    };
    let svc = poll_until("both replicas as endpoints", WAIT, || {
        let all = c.json(&["services"]);
        let svc = all
            .as_array()?
            .iter()
            .find(|s| s["name"] == "hello")?
            .clone();
        (endpoints(&svc).len() == 2).then_some(svc)
    });
    assert_eq!(svc["virtual_ip"], vip.as_str(), "{svc:#}");
    assert_eq!(
        endpoints(&svc),
        pod_ips(&s),
        "endpoints are the replicas' pod IPs: {svc:#}"
    );
    assert_eq!(
        svc["ports"],
        serde_json::json!([{"name": "http", "port": 80, "target": 8080, "protocol": "tcp"}])
    );
    let table = c.ok(&["services"]);
    assert!(
        table.contains(&vip) && table.contains("80->8080/tcp"),
        "{table}"
    );
    assert!(
        c.ok(&["status", "hello"])
            .contains(&format!("service:   {vip}"))
    );

    c.ok(&["scale", "hello", "1"]);
    poll_until("one endpoint after the scale-down", WAIT, || {
        let all = c.json(&["services"]);
        let svc = all.as_array()?.first()?.clone();
        let s = c.json(&["status", "hello"]);
        let one = endpoints(&svc).len() == 1 && endpoints(&svc) == pod_ips(&s);
        one.then_some(())
    });
    c.ok(&["delete", "hello"]);
    poll_until("no service after the delete", WAIT, || {
        (c.json(&["services"]) == serde_json::json!([])).then_some(())
    });
}

#[test]
fn bad_specs_and_unknown_deployments_are_refused() {
    let c = cluster(1);
    let good = hello_toml("v1", 1, IMAGE, "");

    let unknown = c.spec(
        "unknown.toml",
        &good.replace("replicas = 1", "replicaz = 1"),
    );
    let r = c.berth(&["deploy", "-f", unknown.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("unknown.toml:3:"), "{r:?}");
    assert!(r.stderr.contains("replicaz"), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "one line: {r:?}");

    let nested = c.spec(
        "nested.toml",
        &good.replace("progress_deadline", "progress_deadlin"),
    );
    let r = c.berth(&["deploy", "-f", nested.to_str().unwrap(), "--wait"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("nested.toml:12:"), "{r:?}");
    assert!(r.stderr.contains("progress_deadlin"), "{r:?}");

    let negative = c.spec(
        "negative.toml",
        &good.replace("replicas = 1", "replicas = -1"),
    );
    let r = c.berth(&["deploy", "-f", negative.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("negative.toml:3:"), "{r:?}");
    assert!(r.stderr.contains("replicas: -1 is negative"), "{r:?}");

    // The scheduler checks what only it can: the probe's port must be exposed.
    let probe = c.spec(
        "probe.toml",
        &good.replace("readiness = { tcp = 8080", "readiness = { tcp = 9999"),
    );
    let r = c.berth(&["deploy", "-f", probe.to_str().unwrap(), "--wait"]);
    // The scheduler's InvalidArgument: the usage/invalid-argument exit status.
    assert_eq!(r.code, EXIT_INVALID_ARGUMENT, "{r:?}");
    assert!(r.stderr.contains("spec.readiness"), "{r:?}");
    assert!(r.stderr.contains("9999"), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "one line: {r:?}");

    let bad_name = c.spec(
        "name.toml",
        &good.replace("name = \"hello\"", "name = \"Hello_World\""),
    );
    let r = c.berth(&["deploy", "-f", bad_name.to_str().unwrap()]);
    assert_eq!(r.code, EXIT_INVALID_ARGUMENT, "{r:?}");
    assert!(r.stderr.contains("name"), "{r:?}");

    // A deployment's name is its service's DNS name: a label that ends in '-' is refused.
    let dash = c.spec(
        "dash.toml",
        &good.replace("name = \"hello\"", "name = \"hello-\""),
    );
    let r = c.berth(&["deploy", "-f", dash.to_str().unwrap()]);
    assert_eq!(r.code, EXIT_INVALID_ARGUMENT, "{r:?}");
    assert!(
        r.stderr.contains("spec.name") && r.stderr.contains("DNS label"),
        "{r:?}"
    );
    let twice = c.spec(
        "twice.toml",
        &good.replace(
            "ports = [",
            "service_ports = [{ port = 80, target = 8080 }, { port = 80, target = 8081 }]\nports = [",
        ),
    );
    let r = c.berth(&["deploy", "-f", twice.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("service_ports: 80 tcp is declared twice"),
        "{r:?}"
    );

    let missing = c.specs.path().join("missing.toml");
    let r = c.berth(&["deploy", "-f", missing.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("missing.toml"), "{r:?}");

    for args in [
        &["approve", "nope"][..],
        &["approve", "nope", "--wait"],
        &["reject", "nope"],
        &["rollback", "nope"],
        &["scale", "nope", "2"],
        &["status", "nope"],
        &["history", "nope"],
        &["delete", "nope"],
        &["logs", "nope"],
    ] {
        let r = c.berth(args);
        assert_eq!(r.code, EXIT_NOT_FOUND, "berth {args:?}: {r:?}");
        assert!(r.stderr.contains("not found"), "berth {args:?}: {r:?}");
        assert!(r.stderr.contains("nope"), "berth {args:?}: {r:?}");
    }

    // A scheduler that is not there: a clear error, no hang.
    let nowhere = format!("http://{}", free_loopback_addr());
    let r = run(Command::new(binary("berth")).args(["nodes", "--scheduler", &nowhere]));
    assert_eq!(r.code, EXIT_UNAVAILABLE, "{r:?}");
    assert!(r.stderr.contains("connecting to the scheduler"), "{r:?}");

    // Nothing was applied.
    assert_eq!(c.json(&["status"]), serde_json::json!([]));
}

// ----- berth up -----

/// A network namespace for `berth up`'s node, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("berth-cliup-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let r = run(Command::new("ip").args(&args));
            assert_eq!(r.code, 0, "ip {args:?}: {r:?}");
        }
        Self(name)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

/// `berth up` as a child process; on drop (a failed test) it is interrupted, then killed, and
/// whatever it left under its data dir goes too.
struct Up {
    child: Option<Child>,
    data: PathBuf,
    node: String,
    out: tempfile::TempDir,
}

impl Up {
    fn stdout(&self) -> String {
        fs::read_to_string(self.out.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.out.path().join("stderr")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut text = format!(
            "--- berth up stdout:\n{}\n--- berth up stderr:\n{}\n",
            self.stdout(),
            self.stderr()
        );
        for daemon in ["scheduler", "agent"] {
            let log = fs::read_to_string(self.data.join("up").join(format!("{daemon}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            text.push_str(&format!(
                "--- {daemon}.log (last lines):\n{}\n",
                lines[lines.len().saturating_sub(60)..].join("\n")
            ));
        }
        text
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-s", signal, &child.id().to_string()])
                .status();
        }
    }

    /// Waits `within` for it to exit.
    fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        poll_until_or_none(deadline, || child.try_wait().expect("wait for berth up"))
    }
}

/// Polls `check` until it gives `Some` or `deadline` passes (None): for cleanup, which must
/// not fail.
fn poll_until_or_none<T>(deadline: Instant, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if self.child.is_some() {
            self.signal("INT");
            if self.wait(Duration::from_secs(30)).is_none()
                && let Some(child) = self.child.as_mut()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for (pid, _) in leftover_processes(&self.data) {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
        }
        remove_cgroups(&self.node);
        for point in mounts_under(&self.data) {
            let _ = Command::new("umount").arg("-l").arg(&point).status();
        }
    }
}

/// berth processes (daemons, shims, runtimes) whose command line names `dir`: (pid, cmdline).
fn leftover_processes(dir: &Path) -> Vec<(u32, String)> {
    let dir = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            let exe = cmdline.split(' ').next().unwrap_or_default();
            let ours = [
                "berth-shim",
                "berth-agent",
                "berth-scheduler",
                "berth-runtime",
            ]
            .iter()
            .any(|b| exe.ends_with(b));
            (ours && cmdline.contains(&dir)).then_some((pid, cmdline))
        })
        .collect()
}

/// Mount points at or under `dir`, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p == &dir || p.starts_with(&format!("{dir}/")))
        .collect()
}

/// The node's parent cgroups that exist: `berth-agent/NODE` under cgroup2's root and under
/// every v1 hierarchy.
fn node_cgroups(node: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![root.to_path_buf()];
    if let Ok(entries) = fs::read_dir(root) {
        hierarchies.extend(entries.flatten().map(|e| e.path()));
    }
    hierarchies
        .into_iter()
        .map(|h| h.join("berth-agent").join(node))
        .filter(|d| d.is_dir())
        .collect()
}

/// The processes left in the node's cgroups (any hierarchy, any depth).
fn cgroup_procs(node: &str) -> Vec<String> {
    let mut procs = Vec::new();
    let mut dirs = node_cgroups(node);
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
        procs.extend(
            fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .map(|l| format!("{} in {}", l.trim(), dir.display())),
        );
    }
    procs
}

/// Kills what is left in the node's cgroups and removes them, deepest first.
fn remove_cgroups(node: &str) {
    let mut all = Vec::new();
    let mut dirs = node_cgroups(node);
    while let Some(dir) = dirs.pop() {
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(entry.path());
                }
            }
            all.push(dir);
        }
    }
    for dir in all.iter().rev() {
        let _ = fs::write(dir.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(3);
        let _ = poll_until_or_none(deadline, || fs::remove_dir(dir).ok());
    }
}

#[test]
fn berth_up_runs_a_one_node_cluster_and_stops_cleanly_on_ctrl_c() {
    require_root();
    let berth = Berth::new();
    busybox_image(&berth, IMAGE);
    let data = berth.data_dir.path().to_path_buf();
    let netns = Netns::new();
    let node = unique_node_name("up");
    let listen = free_loopback_addr();
    let endpoint = format!("http://{listen}");
    let out = tempfile::Builder::new()
        .prefix("berth-cli-up-")
        .tempdir()
        .expect("temp dir");
    let child = berth
        .cmd(["up", "--listen", &listen.to_string(), "--node-name", &node])
        .arg(format!("--agent-arg=--net-namespace={}", netns.path()))
        .arg("--agent-arg=--stop-grace=1")
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--agent-metrics-listen", "127.0.0.1:0"])
        .env_remove("BERTH_SCHEDULER")
        .stdin(Stdio::null())
        .stdout(File::create(out.path().join("stdout")).unwrap())
        .stderr(File::create(out.path().join("stderr")).unwrap())
        .spawn()
        .expect("start berth up");
    let mut up = Up {
        child: Some(child),
        data: data.clone(),
        node: node.clone(),
        out,
    };
    let berth_at = |args: &[&str]| {
        let (sub, rest) = args.split_first().unwrap();
        run(Command::new(binary("berth"))
            .arg(sub)
            .args(["--scheduler", &endpoint])
            .args(rest))
    };

    poll_until("berth up's node ready", WAIT, || {
        if let Some(child) = up.child.as_mut() {
            let exited = child.try_wait().unwrap();
            assert!(exited.is_none(), "berth up exited: {exited:?}");
        }
        let r = berth_at(&["nodes", "-o", "json"]);
        let nodes: Value = serde_json::from_str(&r.stdout).ok()?;
        nodes
            .as_array()?
            .iter()
            .any(|n| n["name"] == node.as_str() && n["ready"] == true)
            .then_some(())
    });
    poll_until("berth up to say it is ready", WAIT, || {
        up.stdout().contains("ready").then_some(())
    });
    assert!(up.stdout().contains(&endpoint), "{}", up.logs());

    let specs = tempfile::tempdir().unwrap();
    let app = specs.path().join("app.toml");
    fs::write(&app, hello_toml("v1", 1, IMAGE, "")).unwrap();
    let r = berth_at(&[
        "deploy",
        "-f",
        app.to_str().unwrap(),
        "--wait",
        "--timeout",
        TIMEOUT,
    ]);
    assert_eq!(r.code, 0, "{r:?}\n{}", up.logs());
    let ps: Value = serde_json::from_str(&berth_at(&["ps", "-o", "json"]).stdout).unwrap();
    assert_eq!(ps.as_array().map(Vec::len), Some(1), "{ps:#}");
    assert_eq!(ps[0]["node"], node.as_str());
    assert!(
        !leftover_processes(&data).is_empty(),
        "the daemons and the shim run"
    );

    // Ctrl-C: deployments deleted, containers removed, both daemons stopped.
    up.signal("INT");
    let status = up.wait(Duration::from_secs(90));
    let status = status.unwrap_or_else(|| panic!("berth up still runs 90s after SIGINT"));
    up.child = None;
    assert!(status.success(), "berth up: {status}\n{}", up.logs());
    let stdout = up.stdout();
    assert!(
        stdout.contains("berth up: deleting deployment hello"),
        "{stdout}"
    );
    assert!(stdout.contains("berth up: stopped"), "{stdout}");
    let left = leftover_processes(&data);
    assert!(left.is_empty(), "left running: {left:?}\n{}", up.logs());
    let procs = cgroup_procs(&node);
    assert!(procs.is_empty(), "left in cgroups: {procs:?}");
    let dirs = node_cgroups(&node);
    assert!(dirs.is_empty(), "cgroups left: {dirs:?}");
    let mounts = mounts_under(&data);
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
    let r = berth_at(&["nodes"]);
    assert_eq!(r.code, EXIT_UNAVAILABLE, "the scheduler is gone: {r:?}");
    drop(up);
    drop(netns);
}
