//! The shop's delivery pipeline end to end (examples/pipeline): pipeline.sh with berth
//! commands only, and pipeline.py through the gRPC API (inside with-cluster.sh), each on a data
//! dir (tmpfs), a scheduler port, a registry, a node and environment names of its own. Real
//! `berth up`, real containers, Debian's docker-registry. Asserts on the outcome: production
//! serves the release ids staging served, the audit log holds the promote and approve entries,
//! and the integration step really ran (an order placed through staging's web was counted by
//! staging's api).

use std::path::Path;
use std::process::{Command, Output};

use berth_tests::agent_node::unique_node_name;
use berth_tests::{
    Berth, Registry, binary, debian_image, free_loopback_addr, pyvenv, require_root, require_tool,
    workspace_root,
};
use serde_json::Value;

/// What both pipelines are run with: their own names, ports and data dir.
struct Run {
    berth: Berth,
    registry: Registry,
    staging: String,
    production: String,
    out: tempfile::TempDir,
}

impl Run {
    /// A data dir on tmpfs with the Debian base image, a fresh registry and unique names.
    fn new() -> Self {
        require_root();
        for tool in ["jq", "curl", "docker-registry", "ip"] {
            require_tool(tool);
        }
        let berth = Berth::new_in(Path::new("/dev/shm"));
        debian_image(&berth, "debian:bookworm");
        Self {
            berth,
            registry: Registry::start(),
            staging: unique_node_name("stg"),
            production: unique_node_name("prd"),
            out: tempfile::Builder::new()
                .prefix("berth-pipeline-out-")
                .tempdir()
                .expect("a temp dir"),
        }
    }

    /// `bash examples/pipeline/SCRIPT ARGS` with this run's settings; its output, which must
    /// say it succeeded.
    fn script(&self, script: &str, args: &[&str]) -> String {
        let out: Output = Command::new("bash")
            .arg(workspace_root().join("examples/pipeline").join(script))
            .args(args)
            .env("BERTH", binary("berth"))
            .env("BERTH_DATA_DIR", self.berth.data_dir.path())
            .env("REGISTRY", self.registry.addr.to_string())
            .env("UP_LISTEN", free_loopback_addr().to_string())
            .env("NODE_NAME", unique_node_name("pipe"))
            .env("STAGING", &self.staging)
            .env("PRODUCTION", &self.production)
            .env("VERSION", "t1")
            .env("DEBIAN_BASE", "given")
            .env("PIPELINE_OUT", self.out.path())
            .env_remove("BERTH_SCHEDULER")
            .env_remove("BERTH_ENV")
            .output()
            .unwrap_or_else(|e| panic!("starting {script}: {e}"));
        let text = format!(
            "{}\n--- stderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{script} failed: {}\n{text}",
            out.status
        );
        text
    }

    fn json(&self, file: &str) -> Value {
        let path = self.out.path().join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
    }
}

/// (app, environment, release) from a JSON list of objects, read under `keys` in that order:
/// pipeline.sh's status.json (`berth status -o json` of every service in both environments)
/// or pipeline.py's `serving` list.
fn serving(list: &Value, keys: [&str; 3]) -> Vec<(String, String, String)> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|d| {
            let field = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            (field(keys[0]), field(keys[1]), field(keys[2]))
        })
        .collect()
}

/// The release `app` serves in `env`, which must be a release id.
fn release_of(serving: &[(String, String, String)], app: &str, env: &str) -> String {
    let found = serving
        .iter()
        .find(|(a, e, _)| a == app && e == env)
        .unwrap_or_else(|| panic!("no {app} in {env}: {serving:?}"));
    assert!(
        found.2.starts_with("r-"),
        "{app} in {env}: no release: {serving:?}"
    );
    found.2.clone()
}

/// The audit holds an entry with `action` for `app` in `env` whose outcome is "ok".
fn assert_audited(entries: &[Value], action: &str, app: &str, env: &str) {
    let hit = entries.iter().any(|e| {
        e["action"] == action && e["app"] == app && e["environment"] == env && e["outcome"] == "ok"
    });
    assert!(
        hit,
        "no ok {action} of {app} in {env} in the audit: {entries:#?}"
    );
}

#[test]
fn pipeline_sh_promotes_to_production_exactly_what_staging_tested() {
    let run = Run::new();
    let text = run.script("pipeline.sh", &[]);
    for step in [
        "=== [build]",
        "=== [unit]",
        "=== [lint]",
        "=== [push]",
        "=== [staging]",
        "=== [integration]",
        "=== [promote]",
        "=== [approve]",
        "=== [verify]",
        "=== [report]",
        "pipeline: done",
    ] {
        assert!(text.contains(step), "no {step:?} in:\n{text}");
    }
    // The unit tests and the linter ran in the images and passed.
    assert!(
        text.contains("Ran 7 tests") && text.contains("Ran 4 tests"),
        "{text}"
    );

    // The integration step really ran against each environment: an order placed through
    // web reached api and db.
    let integration =
        std::fs::read_to_string(run.out.path().join("integration.txt")).expect("integration.txt");
    for env in [&run.staging, &run.production] {
        assert!(
            integration.contains(&format!("integration ({env}): ok, orders 0 -> 1")),
            "{integration}"
        );
    }

    // Production serves the very releases staging tested; db has one per environment.
    let by_status = serving(&run.json("status.json"), ["name", "environment", "release"]);
    for app in ["api", "web"] {
        assert_eq!(
            release_of(&by_status, app, &run.staging),
            release_of(&by_status, app, &run.production),
            "{app}: {by_status:?}"
        );
    }
    // `berth releases` says the same, and each release names its image by digest.
    let releases = run.json("releases.json");
    let listed = serving(&releases["serving"], ["app", "environment", "release"]);
    for app in ["api", "web"] {
        let id = release_of(&listed, app, &run.production);
        assert_eq!(
            id,
            release_of(&by_status, app, &run.production),
            "{releases}"
        );
        let record = releases["releases"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["id"] == id.as_str()))
            .unwrap_or_else(|| panic!("no release {id} listed: {releases}"));
        assert!(
            record["image_digest"]
                .as_str()
                .is_some_and(|d| d.starts_with("sha256:")),
            "{record}"
        );
        assert_eq!(
            record["first_environment"],
            run.staging.as_str(),
            "{record}"
        );
    }
    // Every image was pinned by digest in the registry.
    let images = std::fs::read_to_string(run.out.path().join("images.txt")).expect("images");
    for line in images.lines() {
        assert!(
            line.contains(&format!("{}/shop/", run.registry.addr)) && line.contains("@sha256:"),
            "{images}"
        );
    }

    let audit = run.json("audit.json");
    let entries = audit
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .unwrap_or_else(|| panic!("audit.json holds no entries: {audit}"));
    for app in ["api", "web"] {
        assert_audited(entries, "apply", app, &run.staging);
        assert_audited(entries, "promote", app, &run.production);
        assert_audited(entries, "approve", app, &run.production);
    }
}

#[test]
fn pipeline_py_drives_the_same_flow_through_the_grpc_api() {
    let python = pyvenv::python();
    let run = Run::new();
    let results = run.out.path().join("results.json");
    let python = python.to_str().expect("utf-8 path");
    let script = workspace_root().join("examples/pipeline/pipeline.py");
    let text = run.script(
        "with-cluster.sh",
        &[
            python,
            script.to_str().expect("utf-8 path"),
            "--results",
            results.to_str().expect("utf-8 path"),
        ],
    );
    assert!(text.contains("pipeline.py: done"), "{text}");
    for env in [&run.staging, &run.production] {
        assert!(
            text.contains(&format!("integration ({env}): ok")),
            "no integration step against {env}:\n{text}"
        );
    }
    let results = run.json("results.json");
    let serving = serving(&results["serving"], ["app", "environment", "release"]);
    for app in ["api", "web"] {
        assert_eq!(
            release_of(&serving, app, &run.staging),
            release_of(&serving, app, &run.production),
            "{app}: {serving:?}"
        );
    }
    // MessageToDict: proto field names in lowerCamelCase, default values left out.
    let entries = results["audit"].as_array().expect("an audit list");
    for app in ["api", "web"] {
        assert_audited(entries, "promote", app, &run.production);
        assert_audited(entries, "approve", app, &run.production);
    }
}
