//! Environments and promotion end to end with the real `berth` CLI against a real
//! `berth-scheduler` and simulated nodes (they run whatever they are assigned, so the test
//! needs neither root nor images): `berth env create|ls|rm`, `--env`/BERTH_ENV on cluster
//! commands, an environment's approval policy and node selector, and `berth promote` of
//! exactly the release serving in staging to production, with its refusals.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::cluster::SchedulerProc;
use berth_tests::fake_node::{Behaviour, Sessions, fake_agent_with};
use berth_tests::{binary, poll_until, pyvenv};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// `berth`'s exit statuses (README, "Exit statuses").
const EXIT_AWAITING_APPROVAL: i32 = 3;
const EXIT_INVALID_ARGUMENT: i32 = 2;
const EXIT_NOT_FOUND: i32 = 5;
const EXIT_CONFLICT: i32 = 6;

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A scheduler, simulated nodes (name, labels) and a dir for spec files; the nodes are tasks
/// of `_nodes`, so they stop with the test, pass or fail, and so does the scheduler.
struct Sim {
    sched: SchedulerProc,
    specs: tempfile::TempDir,
    _nodes: tokio::runtime::Runtime,
}

impl Sim {
    fn start(nodes: &[(&str, &[(&str, &str)])]) -> Self {
        let sched = SchedulerProc::start(&["--reschedule-delay-ms", "1000"]);
        let rt = tokio::runtime::Runtime::new().expect("a runtime for the nodes");
        for (name, labels) in nodes {
            let behaviour = Behaviour {
                runs_assignments: true,
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
                ..Behaviour::default()
            };
            rt.spawn(fake_agent_with(
                (*name).to_string(),
                vec![sched.endpoint()],
                Sessions::default(),
                behaviour,
            ));
        }
        let sim = Self {
            sched,
            specs: tempfile::Builder::new()
                .prefix("berth-env-specs-")
                .tempdir()
                .expect("temp dir"),
            _nodes: rt,
        };
        poll_until("every simulated node ready", WAIT, || {
            let listed = sim.json(&["nodes"]);
            let listed = listed.as_array()?;
            (listed.len() == nodes.len() && listed.iter().all(|n| n["ready"] == true)).then_some(())
        });
        sim
    }

    fn run(&self, cmd: &mut Command) -> Run {
        let out = cmd.stdin(Stdio::null()).output().expect("berth runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `berth ARGS...` with no BERTH_ENV of the caller's.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.sched.berth(args);
        cmd.env_remove("BERTH_ENV");
        cmd
    }

    fn berth(&self, args: &[&str]) -> Run {
        self.run(&mut self.command(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.berth(args);
        assert_eq!(r.code, 0, "berth {args:?}: {r:?}");
        r.stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let args: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
        let out = self.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("berth {args:?}: {e}: {out}"))
    }

    /// A berth command that must fail with `code`, its stderr naming `what`.
    fn refused(&self, args: &[&str], code: i32, what: &str) {
        let r = self.berth(args);
        assert_eq!(r.code, code, "berth {args:?}: {r:?}");
        assert!(r.stderr.contains(what), "berth {args:?}: {r:?}");
    }

    /// Writes the spec of `name` with `replicas` and `version` in its env.
    fn spec(&self, name: &str, version: &str, replicas: u32) -> String {
        let path = self.specs.path().join(format!("{name}-{version}.toml"));
        let text = format!(
            "name = \"{name}\"\nimage = \"env-test:1\"\nreplicas = {replicas}\n\
             cpu = \"100m\"\nmemory = \"32m\"\nenv = {{ VERSION = \"{version}\" }}\n"
        );
        std::fs::write(&path, text).expect("write the spec");
        path.to_str().expect("a UTF-8 path").to_string()
    }

    /// `berth status NAME --env ENV -o json` once `check` accepts it.
    fn status_until(&self, name: &str, env: &str, check: impl Fn(&Value) -> bool) -> Value {
        poll_until(&format!("{name} in {env}"), WAIT, || {
            Some(self.json(&["status", name, "--env", env])).filter(|s| check(s))
        })
    }
}

fn nodes_of(s: &Value) -> BTreeSet<String> {
    s["replica_status"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| r["node"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn environments_are_created_listed_refused_and_removed() {
    let sim = Sim::start(&[("env-node", &[])]);
    create_and_list(&sim);
    let app = sim.spec("hello", "v1", 1);
    sim.refused(
        &["deploy", "-f", &app, "--env", "stagin"],
        EXIT_NOT_FOUND,
        "environment \"stagin\" does not exist",
    );
    sim.refused(&["status", "--env", "stagin"], EXIT_NOT_FOUND, "stagin");

    // BERTH_ENV names the environment as --env does.
    let mut deploy = sim.command(&["deploy", "-f", &app, "--wait", "--timeout", "60s"]);
    let r = sim.run(deploy.env("BERTH_ENV", "staging"));
    assert_eq!(r.code, 0, "{r:?}");
    let s = sim.json(&["status", "hello", "--env", "staging"]);
    assert_eq!(s["name"], "hello");
    assert_eq!(s["environment"], "staging");
    let ids: Vec<&str> = s["replica_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["container_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.iter().all(|id| id.starts_with("hello.staging-")),
        "container ids carry the environment: {ids:?}"
    );
    // Not in the default environment.
    assert_eq!(sim.json(&["status"]).as_array().map(Vec::len), Some(0));
    sim.refused(
        &["status", "hello"],
        EXIT_NOT_FOUND,
        "deployment hello not found",
    );
    sim.refused(
        &["status", "nope", "--env", "staging"],
        EXIT_NOT_FOUND,
        "deployment nope in environment staging not found",
    );
    // --env before the subcommand works as after it.
    let mut before = Command::new(binary("berth"));
    before
        .args([
            "--env",
            "staging",
            "--scheduler",
            &sim.sched.endpoint(),
            "status",
        ])
        .env_remove("BERTH_ENV");
    let r = sim.run(&mut before);
    assert_eq!(r.code, 0, "{r:?}");
    let table = r.stdout;
    assert!(
        table.contains("ENV") && table.contains("staging"),
        "{table}"
    );

    let all = sim.json(&["status", "-A"]);
    let envs: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["environment"].as_str().unwrap())
        .collect();
    assert_eq!(envs, ["staging"], "{all:#}");

    sim.refused(&["env", "rm", "staging"], EXIT_CONFLICT, "hello");
    sim.refused(
        &["env", "rm", "default"],
        EXIT_CONFLICT,
        "cannot be deleted",
    );
    sim.ok(&["delete", "hello", "--env", "staging"]);
    sim.ok(&["env", "rm", "staging"]);
    sim.refused(&["env", "rm", "staging"], EXIT_NOT_FOUND, "staging");
}

/// Creates staging (auto) and production (manual, tier=prod) and checks `env ls` and the
/// refusals of create.
fn create_and_list(sim: &Sim) {
    let out = sim.ok(&["env", "create", "staging"]);
    assert!(out.contains("environment staging created"), "{out}");
    sim.ok(&[
        "env",
        "create",
        "production",
        "--approval",
        "manual",
        "--node-selector",
        "tier=prod",
    ]);
    let listed = sim.json(&["env", "ls"]);
    let by_name: BTreeMap<String, Value> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    assert_eq!(
        by_name.keys().map(String::as_str).collect::<Vec<_>>(),
        ["default", "production", "staging"]
    );
    assert_eq!(by_name["production"]["approval"], "manual");
    assert_eq!(by_name["production"]["node_selector"]["tier"], "prod");
    assert_eq!(by_name["staging"]["approval"], "auto");

    sim.refused(
        &["env", "create", "staging"],
        EXIT_CONFLICT,
        "exists already",
    );
    sim.refused(
        &["env", "create", "default"],
        EXIT_CONFLICT,
        "exists already",
    );
    sim.refused(
        &["env", "create", "Bad_Env"],
        EXIT_INVALID_ARGUMENT,
        "environment.name",
    );
}

#[test]
fn promotion_applies_the_staging_release_under_production_rules() {
    let sim = Sim::start(&[
        ("stage-1", &[]),
        ("prod-1", &[("tier", "prod")]),
        ("prod-2", &[("tier", "prod")]),
    ]);
    sim.ok(&["env", "create", "staging"]);
    sim.ok(&[
        "env",
        "create",
        "production",
        "--approval",
        "manual",
        "--node-selector",
        "tier=prod",
    ]);
    let v1 = sim.spec("hello", "v1", 3);
    let r = sim.berth(&[
        "deploy",
        "-f",
        &v1,
        "--env",
        "staging",
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let staging = sim.json(&["status", "hello", "--env", "staging"]);
    let release = staging["release"].as_str().unwrap().to_string();
    assert!(release.starts_with("r-"), "{staging:#}");

    // Production is manual: the auto spec's rollout waits there.
    let r = sim.berth(&[
        "promote",
        "hello",
        "--from",
        "staging",
        "--to",
        "production",
        "--wait",
        "--stop-at-approval",
        "--timeout",
        "60s",
    ]);
    assert_eq!(r.code, EXIT_AWAITING_APPROVAL, "{r:?}");
    assert!(r.stdout.contains(&release), "{r:?}");
    assert!(r.stdout.contains("--env production"), "{r:?}");
    let held = sim.json(&["status", "hello", "--env", "production"]);
    assert_eq!(held["phase"], "awaiting-approval", "{held:#}");
    assert_eq!(held["release"], "", "nothing completed in production yet");

    let r = sim.berth(&[
        "approve",
        "hello",
        "--env",
        "production",
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let prod = sim.status_until("hello", "production", |s| {
        s["phase"] == "complete" && s["ready_replicas"] == 3
    });
    assert_eq!(
        prod["release"],
        release.as_str(),
        "the same release: {prod:#}"
    );
    assert_eq!(prod["image"], staging["image"]);
    let prod_nodes = nodes_of(&prod);
    assert!(
        prod_nodes.iter().all(|n| n.starts_with("prod-")),
        "production's node selector: {prod_nodes:?}"
    );
    // The same spec: one history record in each, with the same release id.
    let history = |env: &str| sim.json(&["history", "hello", "--env", env]);
    let (h_stage, h_prod) = (history("staging"), history("production"));
    assert_eq!(
        h_stage[0]["release"], h_prod[0]["release"],
        "{h_stage:#} {h_prod:#}"
    );

    promotion_refusals(&sim, &release);
}

/// Promote's refusals, each naming what was wrong, after `release` completed in staging and
/// production; then that release promoted by id again, which changes nothing.
fn promotion_refusals(sim: &Sim, release: &str) {
    let v2 = sim.spec("hello", "v2", 3);
    let r = sim.berth(&["deploy", "-f", &v2, "--env", "staging"]);
    assert_eq!(r.code, 0, "{r:?}");
    let promote = |extra: &[&str]| {
        let args: Vec<&str> = [
            "promote",
            "hello",
            "--from",
            "staging",
            "--to",
            "production",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
        sim.berth(&args)
    };
    let r = promote(&["--release", "r-0000000000000000"]);
    assert_eq!(r.code, EXIT_CONFLICT, "{r:?}");
    assert!(
        r.stderr
            .contains("release r-0000000000000000 never completed in staging"),
        "{r:?}"
    );
    sim.refused(
        &["promote", "nope", "--from", "staging", "--to", "production"],
        EXIT_NOT_FOUND,
        "nope",
    );
    sim.refused(
        &["promote", "hello", "--from", "stagin", "--to", "production"],
        EXIT_NOT_FOUND,
        "environment \"stagin\" does not exist",
    );
    sim.refused(
        &["promote", "hello", "--from", "staging", "--to", "prod"],
        EXIT_NOT_FOUND,
        "environment \"prod\" does not exist",
    );
    sim.refused(
        &["promote", "hello", "--from", "staging", "--to", "staging"],
        EXIT_INVALID_ARGUMENT,
        "to_environment",
    );
    // The release that completed in staging may be named; promoting it again changes nothing.
    let r = promote(&["--release", release, "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let promoted: Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(promoted["release"], release);
    assert_eq!(promoted["changed"], false, "{promoted:#}");
}

/// Promotion time, `berth promote --wait` until 3 replicas of the target complete, into an
/// automatic environment. Printed, not asserted (simulated nodes: the control plane's share).
/// Deploys `app` (named hello) to staging and waits, then promotes it to production and waits:
/// both must succeed; returns how long the promotion took.
fn deploy_then_promote(sim: &Sim, app: &str, timeout: &str) -> std::time::Duration {
    let r = sim.berth(&[
        "deploy",
        "-f",
        app,
        "--env",
        "staging",
        "--wait",
        "--timeout",
        timeout,
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let started = Instant::now();
    let r = sim.berth(&[
        "promote",
        "hello",
        "--from",
        "staging",
        "--to",
        "production",
        "--wait",
        "--timeout",
        timeout,
    ]);
    let took = started.elapsed();
    assert_eq!(r.code, 0, "{r:?}");
    took
}

#[test]
fn promote_wait_to_complete_for_three_replicas() {
    let sim = Sim::start(&[("n-1", &[]), ("n-2", &[]), ("n-3", &[])]);
    sim.ok(&["env", "create", "staging"]);
    sim.ok(&["env", "create", "production"]);
    let app = sim.spec("hello", "v1", 3);
    let took = deploy_then_promote(&sim, &app, "60s");
    let prod = sim.json(&["status", "hello", "--env", "production"]);
    assert_eq!(prod["phase"], "complete", "{prod:#}");
    assert_eq!(prod["ready_replicas"], 3, "{prod:#}");
    eprintln!(
        "promote --wait to complete, 3 replicas: {} ms",
        took.as_millis()
    );
}

/// The same promotion from Python (tests/python/promote_client.py, stubs generated from
/// proto/ with grpcio-tools): EnvironmentService, Apply, ReleaseService.Promote, Approve.
#[test]
fn python_client_promotes_through_the_grpc_api() {
    let sim = Sim::start(&[("py-1", &[]), ("py-2", &[])]);
    let (mut client, _stubs) = pyvenv::client("promote_client.py");
    let out = client
        .args(["--scheduler", &sim.sched.address()])
        .args(["--name", "hello"])
        .output()
        .expect("starting the python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "promote_client.py failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for step in [
        "ok: CreateEnvironment/ListEnvironments",
        "ok: Apply to staging: release r-",
        "ok: Promote: production awaits approval",
        "ok: Approve: production runs r-",
        "ok: Promote refusals",
        "ok: all",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}\n{stderr}");
    }
}

/// Promotion on real agents (containers, network, a service and readiness probes): the
/// environment-qualified container ids and service names work in the runtime and on the
/// nodes, and the time from `berth promote --wait` to 3 ready replicas in production is
/// printed (not asserted).
#[test]
fn promotion_runs_real_containers_in_the_target_environment() {
    berth_tests::require_root();
    const IMAGE: &str = "env-busybox:1";
    let sched = SchedulerProc::start(&["--reschedule-delay-ms", "1000"]);
    let mut fabric = berth_tests::cluster::Fabric::new();
    let nodes = berth_tests::cluster::start_nodes(&sched, &mut fabric, 3, "envr", IMAGE);
    let sim = Sim {
        sched,
        specs: tempfile::Builder::new()
            .prefix("berth-env-real-")
            .tempdir()
            .expect("temp dir"),
        _nodes: tokio::runtime::Runtime::new().expect("a runtime"),
    };
    poll_until("3 ready nodes", WAIT, || {
        let listed = sim.json(&["nodes"]);
        let listed = listed.as_array()?;
        (listed.len() == 3 && listed.iter().all(|n| n["ready"] == true)).then_some(())
    });
    sim.ok(&["env", "create", "staging"]);
    sim.ok(&["env", "create", "production"]);
    let path = sim.specs.path().join("hello.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"hello\"\nimage = \"{IMAGE}\"\nreplicas = 3\ncpu = \"100m\"\n\
             memory = \"32m\"\ncommand = [\"sh\", \"-c\", \"echo started; mkdir -p /www && echo hi > \
             /www/index.html && exec httpd -f -p 8080 -h /www\"]\n\
             ports = [{{ container = 8080 }}]\n\
             service_ports = [{{ name = \"http\", port = 80, target = 8080 }}]\n\
             readiness = {{ tcp = 8080, period_ms = 200 }}\n"
        ),
    )
    .expect("write the spec");
    let app = path.to_str().unwrap();
    let took = deploy_then_promote(&sim, app, "90s");
    let prod = sim.json(&["status", "hello", "--env", "production"]);
    assert_eq!(prod["ready_replicas"], 3, "{prod:#}");
    let replicas = prod["replica_status"].as_array().unwrap();
    assert!(
        replicas.iter().all(|r| r["state"] == "running"
            && r["container_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("hello.production-"))),
        "{prod:#}"
    );
    found_by_name_in_production(&sim);
    eprintln!(
        "promote --wait to complete, 3 replicas on 3 real agents: {} ms",
        took.as_millis()
    );
    // Every node's load balancer and DNS took the qualified service names.
    poll_until("each node acknowledging the service set", WAIT, || {
        nodes
            .iter()
            .all(|n| n.log().contains("applied services"))
            .then_some(())
    });
    for node in &nodes {
        let log = node.log();
        assert!(
            !log.contains("service set refused"),
            "{}: {log}",
            node.name()
        );
    }
    for env in ["production", "staging"] {
        sim.ok(&["delete", "hello", "--env", env]);
    }
}

/// Logs, explain, ps and services find production's `hello` by its name in the environment.
fn found_by_name_in_production(sim: &Sim) {
    // Logs, explain and ps find the deployment by its name in the environment.
    poll_until("production's output in berth logs", WAIT, || {
        let r = sim.berth(&["logs", "hello", "--env", "production"]);
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout.contains("started").then_some(())
    });
    let explained = sim.json(&["explain", "hello", "--env", "production"]);
    let id = explained["id"].as_str().unwrap_or_default();
    assert!(id.starts_with("hello.production-"), "{explained:#}");
    let ps = sim.json(&["ps", "--env", "production"]);
    let ids: Vec<&str> = ps
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{ps:#}");
    assert!(
        ids.iter().all(|id| id.starts_with("hello.production-")),
        "{ps:#}"
    );
    let services = sim.json(&["services", "--env", "production"]);
    let names: Vec<&str> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello.production"], "{services:#}");
}
