//! Metrics end to end: a real Prometheus (Debian's package) on loopback scrapes a real
//! berth-scheduler and berth-agent running real containers, and the series are queried back
//! through its HTTP API; `promtool check metrics` passes on both daemons' text.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_proto::v1::*;
use berth_tests::cluster::{DeployApi, Fabric, SchedulerProc, all_ready, httpd_spec, start_nodes};
use berth_tests::etcd::EtcdCluster;
use berth_tests::{binary, free_loopback_addr, poll_until, require_root, require_tool};
use serde_json::Value;

const IMAGE: &str = "metrics-busybox:1";
const WAIT: Duration = Duration::from_secs(90);

/// `GET http://addr{path}` (or another method): the status code and the body.
fn http(method: &str, addr: SocketAddr, path: &str) -> (u16, String) {
    let out = Command::new(require_tool("curl"))
        .args(["-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {addr}{path}: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    (code.parse().expect("a status code"), body.to_string())
}

/// A scrape's text, checked to be 200.
fn scrape(addr: SocketAddr) -> String {
    let (code, body) = http("GET", addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// `promtool check metrics` on `text`: the exposition format and Prometheus' naming lints.
fn promtool_check(what: &str, text: &str) {
    let out = berth_tests::output_with_stdin(
        Command::new(require_tool("promtool")).args(["check", "metrics"]),
        text.as_bytes(),
    );
    assert!(
        out.status.success(),
        "promtool check metrics of the {what}'s text: {out:?}\n{text}"
    );
}

/// A Prometheus server on a loopback port of its own, scraping `targets` every second;
/// killed (and its data dir removed) on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[(&str, SocketAddr)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-prom-")
            .tempdir()
            .unwrap();
        let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
        for (job, addr) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr = free_loopback_addr();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(require_tool("prometheus"))
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus");
        let prom = Self {
            child,
            addr,
            _dir: dir,
        };
        poll_until("prometheus ready", WAIT, || {
            let out = Command::new("curl")
                .args(["-sf", &format!("http://{addr}/-/ready")])
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
        prom
    }

    /// The instant vector `query` evaluates to (its `result` array).
    fn query(&self, query: &str) -> Vec<Value> {
        let out = Command::new("curl")
            .args(["-sS", "-G", "--data-urlencode"])
            .arg(format!("query={query}"))
            .arg(format!("http://{}/api/v1/query", self.addr))
            .output()
            .expect("run curl");
        let answer: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{query}: {e}: {out:?}"));
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `query` gives `n` series (scrapes come every second); returns them.
    fn series(&self, query: &str, n: usize) -> Vec<Value> {
        poll_until(&format!("{n} series of {query}"), WAIT, || {
            Some(self.query(query)).filter(|r| r.len() == n)
        })
    }

    /// The one value `query` evaluates to, once there is one.
    fn value(&self, query: &str) -> f64 {
        value(&self.series(query, 1)[0])
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sample's value (Prometheus gives `[time, "value"]`).
fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {sample}"))
}

/// The line of `text` for the series `name{labels...}` (labels in the order they are written),
/// parsed as its value.
fn text_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: the cluster is built once and every family is queried from it"
)]
fn prometheus_scrapes_containers_deployments_and_the_control_plane() {
    require_root();
    require_tool("prometheus");
    require_tool("promtool");
    let sched = SchedulerProc::start(&[]);
    let mut fabric = Fabric::new();
    let nodes = start_nodes(&sched, &mut fabric, 1, "met", IMAGE);
    let node = &nodes[0];
    let api = DeployApi::new(&sched.endpoint(), WAIT);
    let name = "met-web";
    api.apply(httpd_spec(name, IMAGE, "v1", 2));
    let d = api.wait(name, "2 ready replicas", |d| all_ready(d, 2));
    let mut ids: Vec<String> = d
        .replica_status
        .iter()
        .map(|r| r.container_id.clone())
        .collect();
    ids.sort();

    // Both daemons' text passes promtool; other paths and methods are refused.
    let agent_text = scrape(node.metrics_addr());
    promtool_check("agent", &agent_text);
    promtool_check("scheduler", &scrape(sched.metrics_addr()));
    assert_eq!(http("GET", sched.metrics_addr(), "/nope").0, 404);
    assert_eq!(http("POST", node.metrics_addr(), "/metrics").0, 405);

    let prom = Prometheus::start(&[
        ("berth-scheduler", sched.metrics_addr()),
        ("berth-agent", node.metrics_addr()),
    ]);
    let sel = format!(
        "{{deployment=\"{name}\",environment=\"default\",node=\"{}\"}}",
        node.name()
    );

    // Per container, under cAdvisor's names: one series per replica, labelled with its id.
    let usage = prom.series(&format!("container_memory_usage_bytes{sel}"), 2);
    let mut seen: Vec<String> = usage
        .iter()
        .map(|s| s["metric"]["container_id"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    assert_eq!(seen, ids);
    assert!(usage.iter().all(|s| value(s) > 0.0), "{usage:?}");
    for s in prom.series(&format!("container_spec_memory_limit_bytes{sel}"), 2) {
        assert_eq!(value(&s), f64::from(32u32 << 20), "httpd_spec's limit: {s}");
    }
    for s in prom.series(&format!("container_memory_working_set_bytes{sel}"), 2) {
        assert!(value(&s) > 0.0, "{s}");
    }
    for s in prom.series(&format!("container_cpu_usage_seconds_total{sel}"), 2) {
        assert!(value(&s) > 0.0, "httpd and its shell ran: {s}");
    }
    for s in prom.series(&format!("container_start_time_seconds{sel}"), 2) {
        assert!(value(&s) > 1.6e9, "seconds since the epoch: {s}");
    }
    prom.series(
        &format!("container_cpu_cfs_throttled_periods_total{sel}"),
        2,
    );
    for s in prom.series(&format!("container_oom_events_total{sel}"), 2) {
        assert_eq!(value(&s), 0.0, "{s}");
    }
    // The readiness probe connects to each replica over its eth0.
    let received = prom.series(&format!("container_network_receive_bytes_total{sel}"), 2);
    assert!(
        received
            .iter()
            .all(|s| s["metric"]["interface"] == "eth0" && value(s) > 0.0),
        "{received:?}"
    );
    prom.series(&format!("container_network_transmit_bytes_total{sel}"), 2);

    // Per deployment, in kube-state-metrics' shapes.
    let dep = format!("{{deployment=\"{name}\",environment=\"default\"}}");
    assert_eq!(
        prom.value(&format!("berth_deployment_spec_replicas{dep}")),
        2.0
    );
    assert_eq!(
        prom.value(&format!("berth_deployment_status_replicas_ready{dep}")),
        2.0
    );
    assert_eq!(
        prom.value(&format!("berth_deployment_status_replicas_updated{dep}")),
        2.0
    );
    let phases = prom.series(&format!("berth_deployment_rollout_phase{dep}"), 6);
    let on: Vec<&Value> = phases.iter().filter(|s| value(s) == 1.0).collect();
    assert_eq!(on.len(), 1, "one phase at a time: {phases:?}");
    assert_eq!(on[0]["metric"]["phase"], "complete");

    // Per node and the control plane.
    let n = format!("{{node=\"{}\"}}", node.name());
    assert_eq!(prom.value("berth_scheduler_leader"), 1.0);
    assert_eq!(prom.value("berth_scheduler_sessions"), 1.0);
    assert_eq!(prom.value(&format!("berth_node_ready{n}")), 1.0);
    assert!(prom.value(&format!("berth_node_heartbeat_age_seconds{n}")) >= 0.0);
    let running = format!(
        "berth_node_containers{{node=\"{}\",state=\"running\"}}",
        node.name()
    );
    assert_eq!(prom.value(&running), 2.0);
    let memory = format!(
        "berth_node_allocated{{node=\"{}\",resource=\"memory\",unit=\"byte\"}}",
        node.name()
    );
    assert_eq!(prom.value(&memory), f64::from(64u32 << 20));
    assert_eq!(
        prom.value(&format!(
            "berth_node_capacity{{node=\"{}\",resource=\"cpu\",unit=\"core\"}}",
            node.name()
        )),
        2.0,
        "the agent's --cpu 2000m"
    );
    assert!(prom.value("berth_scheduler_placement_duration_seconds_count") >= 2.0);
    assert!(
        prom.value("sum(berth_scheduler_store_write_duration_seconds_count)") > 0.0,
        "the scheduler wrote its records"
    );
    assert!(
        prom.value("berth_deployment_rollout_duration_seconds_count{environment=\"default\"}")
            >= 1.0
    );

    // Approvals and rollbacks count, per deployment.
    let mut v2 = httpd_spec(name, IMAGE, "v2", 2);
    v2.rollout.as_mut().unwrap().approval = Approval::Manual as i32;
    api.apply(v2);
    let waiting = api.watch(name, true);
    assert_eq!(
        waiting.phase,
        RolloutPhase::AwaitingApproval as i32,
        "{waiting:?}"
    );
    let mut client = api.client.clone();
    api.call(client.approve(ApproveRequest {
        name: name.into(),
        ..Default::default()
    }))
    .expect("approve");
    api.wait(name, "v2 rolled out", |d| {
        d.revision == 2 && all_ready(d, 2)
    });
    api.call(client.rollback(RollbackRequest {
        name: name.into(),
        ..Default::default()
    }))
    .expect("rollback");
    api.wait(name, "rolled back", |d| d.revision == 3 && all_ready(d, 2));
    let text = poll_until("the counters", WAIT, || {
        let text = scrape(sched.metrics_addr());
        let labels = format!("{{environment=\"default\",deployment=\"{name}\"}}");
        let approvals = text_value(&text, &format!("berth_deployment_approvals_total{labels}"));
        let rollbacks = text_value(&text, &format!("berth_deployment_rollbacks_total{labels}"));
        (approvals == Some(1.0) && rollbacks == Some(1.0)).then_some(text)
    });
    assert_eq!(
        text_value(
            &text,
            &format!(
                "berth_deployment_rejections_total{{environment=\"default\",deployment=\"{name}\"}}"
            )
        ),
        None,
        "nothing was rejected"
    );
    promtool_check("scheduler after the rollouts", &text);
}

#[test]
fn a_taken_metrics_address_stops_the_start_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(binary("berth-scheduler"))
        .args(["--listen", &free_loopback_addr().to_string()])
        .args(["--metrics-listen", &addr])
        .arg("--data-dir")
        .arg(data.path())
        .stdin(Stdio::null())
        .output()
        .expect("run berth-scheduler");
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("--metrics-listen {addr}")), "{err}");
    let out = Command::new(binary("berth-scheduler"))
        .args(["--metrics-listen", "localhost:x"])
        .output()
        .expect("run berth-scheduler");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--metrics-listen"),
        "{out:?}"
    );
}

#[test]
fn leader_and_standby_both_serve_metrics_and_say_which_leads() {
    let etcd = EtcdCluster::start(1);
    let flags = etcd.scheduler_flags("met-ha", 2);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut scheds: Vec<SchedulerProc> =
        (0..2).map(|_| SchedulerProc::start_exact(&flags)).collect();
    let leads = |s: &SchedulerProc| text_value(&scrape(s.metrics_addr()), "berth_scheduler_leader");
    let leader = poll_until("one leader and one standby", WAIT, || {
        match [leads(&scheds[0]), leads(&scheds[1])] {
            [Some(1.0), Some(0.0)] => Some(0),
            [Some(0.0), Some(1.0)] => Some(1),
            _ => None,
        }
    });
    let standby = 1 - leader;
    let text = scrape(scheds[standby].metrics_addr());
    promtool_check("standby", &text);
    assert_eq!(
        text_value(&text, "berth_scheduler_sessions"),
        None,
        "a standby holds no sessions: {text}"
    );
    scheds[leader].kill9();
    poll_until("the standby to take over", WAIT, || {
        (leads(&scheds[standby]) == Some(1.0)).then_some(())
    });
    let text = scrape(scheds[standby].metrics_addr());
    assert_eq!(
        text_value(&text, "berth_scheduler_sessions"),
        Some(0.0),
        "{text}"
    );
}
