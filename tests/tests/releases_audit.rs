//! Digest pinning, releases and the audit log end to end: the real `berth` against a real
//! berth-scheduler, a real agent and Debian's docker-registry on loopback. A tag is pinned to
//! its manifest digest on Apply, the agent pulls and runs the by-digest reference, a new push
//! of the tag makes a new revision and release, an unreachable registry fails Apply naming the
//! image; every mutating call (refused ones too, and a secret update that rolls) is in
//! `berth audit`, and no secret value ever is.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berth_tests::agent_node::AgentNode;
use berth_tests::cluster::{Fabric, SchedulerProc, start_nodes};
use berth_tests::{
    Berth, Registry, binary, build_image, busybox_rootfs, free_loopback_addr, poll_until,
    require_root,
};
use serde_json::Value;
use tempfile::TempDir;

const IMAGE: &str = "rel-busybox:1";
const WAIT: Duration = Duration::from_secs(90);
const TIMEOUT: &str = "120s";
/// A secret value: it must never come back from `berth audit`, in any format.
const SECRET_VALUE: &str = "hunter2-audit-marker-7f3a";

/// A scheduler (with a secrets key), one agent with [`IMAGE`] in its store, and a dir for
/// spec files.
struct Cluster {
    sched: SchedulerProc,
    nodes: Vec<AgentNode>,
    _fabric: Fabric,
    dir: TempDir,
}

fn cluster() -> Cluster {
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("berth-rel-")
        .tempdir()
        .expect("temp dir");
    let key = dir.path().join("secrets.key");
    let r = run(
        Command::new(binary("berth"))
            .args(["secret", "init-key", "--out"])
            .arg(&key)
            .env_remove("BERTH_SCHEDULER"),
        b"",
    );
    assert!(r.status.success(), "init-key: {r:?}");
    let sched = SchedulerProc::start(&["--secrets-key", key.to_str().unwrap()]);
    let mut fabric = Fabric::new();
    let nodes = start_nodes(&sched, &mut fabric, 1, "rel", IMAGE);
    let c = Cluster {
        sched,
        nodes,
        _fabric: fabric,
        dir,
    };
    poll_until("the node ready", WAIT, || {
        let nodes = c.json(&["nodes"]);
        (nodes.as_array()?.iter().any(|n| n["ready"] == true)).then_some(())
    });
    c
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    berth_tests::output_with_stdin(cmd, stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Cluster {
    fn berth(&self, args: &[&str]) -> Output {
        run(&mut self.sched.berth(args), b"")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(out.status.success(), "berth {args:?}: {out:?}");
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let args: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
        let out = self.ok(&args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("berth {args:?}: bad JSON ({e}): {out}"))
    }

    fn spec(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write the spec");
        path
    }

    /// `berth deploy -f FILE --wait`.
    fn deploy(&self, file: &Path) -> Output {
        self.berth(&[
            "deploy",
            "-f",
            file.to_str().unwrap(),
            "--wait",
            "--timeout",
            TIMEOUT,
        ])
    }

    /// The audit entries of `app`, oldest first.
    fn audit(&self, app: &str) -> Vec<Value> {
        self.json(&["audit", "--app", app])
            .as_array()
            .expect("an array")
            .clone()
    }
}

fn app_toml(name: &str, image: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
image = "{image}"
replicas = 1
cpu = "50m"
memory = "16m"
command = ["sleep", "3600"]
{extra}
"#
    )
}

fn actions(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            let outcome = e["outcome"].as_str().unwrap();
            let outcome = outcome.split(':').next().unwrap().to_string();
            (e["action"].as_str().unwrap().to_string(), outcome)
        })
        .collect()
}

/// Builds a busybox image with a marker file (so each version has its own digest), names it
/// `reference` and pushes it; returns the manifest digest the push reports.
fn push_version(pusher: &Berth, reference: &str, version: &str) -> String {
    let rootfs = TempDir::new().unwrap();
    busybox_rootfs(rootfs.path());
    std::fs::write(rootfs.path().join("version"), version).unwrap();
    let digest = build_image(
        pusher,
        rootfs.path(),
        &format!("rel-src:{version}"),
        "/bin/sh",
    );
    pusher.ok(["image", "tag", &format!("rel-src:{version}"), reference]);
    let pushed = pusher.json(["image", "push", reference]);
    assert_eq!(pushed["digest"], digest.as_str(), "{pushed}");
    digest
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario whose steps build on each other, read top to bottom"
)]
fn apply_pins_tags_to_digests_agents_run_them_and_releases_and_audit_show_it() {
    let c = cluster();
    let registry = Registry::start();
    let pusher = Berth::new();
    let tag = format!("{}/app:1", registry.host());
    let repo = format!("{}/app", registry.host());
    let first = push_version(&pusher, &tag, "1");

    let spec = c.spec("app.toml", &app_toml("pinned", &tag, "pull = true"));
    let out = c.deploy(&spec);
    assert!(out.status.success(), "{out:?}");
    let history = c.json(&["history", "pinned"]);
    assert_eq!(history[0]["image"], format!("{repo}@{first}"), "{history}");
    // The agent pulled the by-digest reference and keeps it under that name.
    let names = c.nodes[0].berth().image_names();
    assert!(names.contains(&format!("{repo}@{first}")), "{names:?}");
    let status = c.json(&["status", "pinned"]);
    let r1 = status["release"].as_str().expect("a release").to_string();
    assert!(r1.starts_with("r-"), "{status}");

    let listing = c.json(&["releases", "pinned"]);
    assert_eq!(
        listing["releases"].as_array().unwrap().len(),
        1,
        "{listing}"
    );
    let serving = &listing["serving"][0];
    assert_eq!(serving["environment"], "default", "{listing}");
    assert_eq!(serving["release"], r1.as_str(), "{listing}");
    assert_eq!(serving["image_digest"], first.as_str(), "{listing}");
    assert_eq!(serving["phase"], "complete", "{listing}");
    assert_eq!(serving["ready_replicas"], 1, "{listing}");

    // The same tag, unchanged: nothing new.
    let out = c.ok(&["deploy", "-f", spec.to_str().unwrap()]);
    assert!(out.contains("unchanged"), "{out}");
    // A new push of the tag: a new revision, by the new digest, and a new release.
    let second = push_version(&pusher, &tag, "2");
    assert_ne!(first, second);
    let out = c.deploy(&spec);
    assert!(out.status.success(), "{out:?}");
    let history = c.json(&["history", "pinned"]);
    assert_eq!(history[1]["revision"], 2, "{history}");
    assert_eq!(history[1]["image"], format!("{repo}@{second}"), "{history}");
    let listing = c.json(&["releases", "pinned"]);
    let ids: Vec<&str> = listing["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{listing}");
    assert_eq!(ids[1], r1, "newest first: {listing}");
    let r2 = ids[0].to_string();
    assert_eq!(listing["serving"][0]["release"], r2.as_str(), "{listing}");
    assert_eq!(listing["serving"][0]["image_digest"], second.as_str());
    let table = c.ok(&["releases"]);
    assert!(table.contains("pinned") && table.contains(&r2), "{table}");

    // An unreachable registry: Apply fails naming the image, and nothing is stored.
    let gone = format!("{}/app:1", free_loopback_addr());
    let bad = c.spec("bad.toml", &app_toml("pinned", &gone, "pull = true"));
    let out = c.berth(&["deploy", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains(&gone), "{out:?}");
    assert_eq!(c.json(&["history", "pinned"]).as_array().unwrap().len(), 2);

    let entries = c.audit("pinned");
    assert_eq!(
        actions(&entries),
        [
            ("apply".into(), "ok".into()),
            ("apply".into(), "unchanged".into()),
            ("apply".into(), "ok".into()),
            ("apply".into(), "error".into())
        ],
        "{entries:?}"
    );
    assert_eq!(entries[0]["to_release"], r1.as_str());
    assert_eq!(entries[2]["from_release"], r1.as_str());
    assert_eq!(entries[2]["to_release"], r2.as_str());
    assert_eq!(entries[2]["to_revision"], 2);
    assert!(entries[3]["outcome"].as_str().unwrap().contains(&gone));
    assert!(
        entries
            .iter()
            .all(|e| e["who"] == "local" && e["environment"] == "default")
    );
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario whose steps build on each other, read top to bottom"
)]
fn every_mutating_call_is_audited_with_failures_and_never_a_secret_value() {
    let c = cluster();
    let r = run(
        &mut c.sched.berth(&["secret", "create", "api-token", "-"]),
        SECRET_VALUE.as_bytes(),
    );
    assert!(r.status.success(), "{r:?}");
    let spec = c.spec(
        "app.toml",
        &app_toml(
            "audited",
            IMAGE,
            "env_from_secret = { TOKEN = \"api-token\" }",
        ),
    );
    let out = c.deploy(&spec);
    assert!(out.status.success(), "{out:?}");
    c.ok(&["scale", "audited", "2"]);
    // Nothing awaits approval: refused, and recorded as refused.
    assert!(!c.berth(&["approve", "audited"]).status.success());
    assert!(!c.berth(&["reject", "audited"]).status.success());
    // An update of the secret rolls the deployment: an "apply" entry naming its version.
    let r = run(
        &mut c.sched.berth(&["secret", "update", "api-token", "-"]),
        format!("{SECRET_VALUE}-2").as_bytes(),
    );
    assert!(r.status.success(), "{r:?}");
    poll_until("the secret's rollout to complete", WAIT, || {
        let s = c.json(&["status", "audited"]);
        (s["revision"] == 2 && s["phase"] == "complete").then_some(())
    });
    c.ok(&["rollback", "audited"]);
    c.ok(&["delete", "audited"]);
    // Deleted: a second delete is refused (not found), and recorded.
    assert!(!c.berth(&["delete", "audited"]).status.success());

    let entries = c.audit("audited");
    let expected = [
        ("apply", "ok"),
        ("scale", "ok"),
        ("approve", "error"),
        ("reject", "error"),
        ("apply", "ok"),
        ("rollback", "ok"),
        ("delete", "ok"),
        ("delete", "error"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, o)| ((*a).to_string(), (*o).to_string()))
        .collect();
    assert_eq!(actions(&entries), expected, "{entries:?}");
    assert_eq!(entries[1]["detail"], "1 -> 2", "{entries:?}");
    assert!(
        entries[2]["outcome"]
            .as_str()
            .unwrap()
            .contains("no rollout awaiting approval"),
        "{entries:?}"
    );
    assert_eq!(entries[4]["detail"], "secret api-token v2", "{entries:?}");
    assert_eq!(entries[4]["from_revision"], 1);
    assert_eq!(entries[4]["to_revision"], 2);
    assert_ne!(entries[4]["from_release"], entries[4]["to_release"]);
    assert_eq!(entries[5]["to_revision"], 3, "{entries:?}");
    assert_eq!(
        entries[6]["to_release"], "",
        "a deleted deployment moves to nothing"
    );
    assert!(entries.iter().all(|e| e["who"] == "local"));

    // Filters: by environment, and the newest N.
    let newest = c.json(&["audit", "--app", "audited", "--limit", "2"]);
    assert_eq!(newest.as_array().unwrap().len(), 2);
    assert_eq!(newest[1]["seq"], entries[7]["seq"]);
    let elsewhere = c.json(&["audit", "--env", "staging"]);
    assert_eq!(elsewhere.as_array().unwrap().len(), 0, "{elsewhere}");
    let table = c.ok(&["audit"]);
    assert!(
        table.contains("scale") && table.contains("1 -> 2"),
        "{table}"
    );
    for shown in [table, c.ok(&["audit", "-o", "json"]), c.sched.log()] {
        assert!(
            !shown.contains(SECRET_VALUE),
            "a secret value leaked: {shown}"
        );
    }
}

#[test]
fn a_node_local_image_is_kept_as_given_with_an_empty_digest() {
    // A node-local image is kept as given: its release has no registry digest.
    let c = cluster();
    let spec = c.spec("local.toml", &app_toml("local", IMAGE, ""));
    assert!(c.deploy(&spec).status.success());
    let listing = c.json(&["releases", "local"]);
    let release = &listing["releases"][0];
    assert_eq!(release["image"], IMAGE, "{listing}");
    assert_eq!(release["image_digest"], "", "{listing}");
    assert_eq!(release["first_environment"], "default", "{listing}");
    assert_eq!(c.json(&["history", "local"])[0]["image"], IMAGE);
}
