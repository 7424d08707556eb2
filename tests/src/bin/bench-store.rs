//! bench-store: the scheduler's state store, redb (embedded) against etcd, with real
//! `berth-scheduler` processes (release build) and real etcd processes, all in one run.
//!
//! 1. Apply → durable: a scheduler on redb, one on a 1-member etcd, one on a 3-member etcd;
//!    `BENCH_APPLY_N` (200) Apply calls of distinct deployments (1 replica, no node), one at a
//!    time, after 5 warm-up calls. Apply answers once the deployment and its revision record
//!    are committed in one store transaction (scheduler/src/api.rs `new_revision`: redb with
//!    immediate durability, i.e. fsynced; etcd once a quorum has it in its fsynced log — etcd
//!    runs with fsync on, no `--unsafe-no-fsync`). The call also reads the deployment and its
//!    history before the write and describes it after, so it is a few reads + one durable
//!    write, end to end over gRPC on loopback.
//! 2. Placement through the store: `BENCH_NODES` (20) fake agents in this process (tokio
//!    tasks speaking NodeService: Register, a Session with Hello, a heartbeat every interval
//!    the scheduler gives — 200 ms — with 64 CPUs / 256 GiB and no containers; they drain the
//!    assignment sets and run nothing). A NEW deployment's first rollout creates every replica
//!    at once (scheduler/src/rollout.rs: no old replicas, so the surge room covers them all;
//!    the controller writes them in ONE store transaction, then places each pending replica
//!    with its own read + conditional write). Timed from the Apply until Get shows every replica
//!    with a node (polled every 20 ms): a) one deployment of `BENCH_PLACE_REPLICAS` (2000)
//!    replicas; b) the same replicas as deployments of `BENCH_PLACE_CHUNK` (100) replicas each,
//!    applied back to back (etcd refuses a transaction of more than 128 operations by default,
//!    `--max-txn-ops`; this variant stays under it). `BENCH_PLACE_RUNS` (3) runs of each, fresh
//!    names, median.
//! 3. Leader failover: 3 schedulers on the 1-member etcd with `--leader-lease-seconds` from
//!    `BENCH_FAILOVER_LEASES` (5,2), one fake agent that knows all three and follows the leader
//!    as the real agent does (a standby's `berth-leader` hint at once; otherwise the next
//!    address, after a backoff of 100 ms doubling to 5 s). `BENCH_FAILOVER_KILLS` (5) times:
//!    kill -9 the leader, time a) until another scheduler logs "elected leader", b) until
//!    ListNodes on the new leader shows the node Ready (the agent re-registered); then the
//!    killed one is started again (it rejoins as a standby).
//!
//! The in-process placement figure (`cargo bench -p berth-scheduler --bench placement`) is read
//! from the file `BENCH_PLACEMENT` names, when set (benches/store.sh runs it first).
//!
//! Env: `BERTH_BIN_DIR` (the release binaries), `BENCH_OUT` (the JSON results file) and the
//! counts above. Run it through `bash benches/store.sh`. Progress goes to stderr, the table to
//! stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::v1::*;
use berth_tests::bench::{
    PlacementLine, cores, env_usize, float_len, loadavg, meminfo_kb, pct, stats,
};
use berth_tests::cluster::{DeployApi as Api, SchedulerProc};
use berth_tests::etcd::EtcdCluster;
use berth_tests::fake_node::{NODE_CPU_MILLIS, NODE_MEMORY, Sessions, fake_agent};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);
const LOG_POLL: Duration = Duration::from_millis(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const PLACE_WITHIN: Duration = Duration::from_secs(180);
const WARMUP_APPLIES: usize = 5;
const REPLICA_CPU_MILLIS: u64 = 10;
const REPLICA_MEMORY: u64 = 16 << 20;
/// etcd's default `--max-txn-ops`.
const ETCD_MAX_TXN_OPS: usize = 128;
/// Cited, not measured: kube-controller-manager / kube-scheduler leader election defaults.
const K8S_LEASE_S: f64 = 15.0;
const K8S_RENEW_DEADLINE_S: f64 = 10.0;
const K8S_RETRY_PERIOD_S: f64 = 2.0;

fn main() {
    let cfg = Config::from_env();
    let out_path = berth_tests::bench::out_path("store.json");
    let placement_lines = berth_tests::bench::placement_lines(|l| l.starts_with("placement:"));
    let started = Instant::now();
    let load_before = loadavg();
    progress("starting");
    // The fake agents' runtime: two workers, as the scheduler has.
    let agents_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let etcd1 = EtcdCluster::start(1);
    progress(&format!("etcd x1 up on {}", etcd1.url()));
    let etcd3 = EtcdCluster::start(3);
    progress(&format!("etcd x3 up on {}", etcd3.url()));
    let backends: Vec<(&str, Option<&EtcdCluster>)> = vec![
        ("redb", None),
        ("etcd x1", Some(&etcd1)),
        ("etcd x3", Some(&etcd3)),
    ];

    // --- 1. Apply → durable.
    let apply: Vec<(String, Vec<f64>)> = backends
        .iter()
        .map(|(name, etcd)| (name.to_string(), apply_series(name, *etcd, cfg.apply_n)))
        .collect();
    // --- 2. Placement through the store.
    let place: Vec<PlaceBackend> = backends
        .iter()
        .map(|(name, etcd)| place_backend(name, *etcd, &agents_rt, &cfg))
        .collect();
    drop(backends);
    drop(etcd3);

    // --- 3. Leader failover on the 1-member etcd.
    let mut failover: Vec<FailoverSeries> = Vec::new();
    if cfg.kills > 0 {
        for &lease in &cfg.leases {
            failover.push(failover_series(&etcd1, &agents_rt, lease, cfg.kills));
        }
    }
    drop(agents_rt);
    drop(etcd1);
    let run = Run {
        in_process: placement_lines
            .iter()
            .filter_map(|l| PlacementLine::parse(l))
            .collect(),
        placement_lines,
        cfg,
        apply,
        place,
        failover,
        total_s: started.elapsed().as_secs_f64(),
        load_before,
        load_after: loadavg(),
    };
    print_table(&run);
    berth_tests::bench::write_results(&out_path, &results_json(&run));
}

/// The counts the environment sets.
struct Config {
    apply_n: usize,
    nodes: usize,
    replicas: u32,
    chunk: u32,
    place_runs: usize,
    kills: usize,
    leases: Vec<u64>,
}

impl Config {
    fn from_env() -> Self {
        let u32_env = |key: &str, default: usize| {
            let n = env_usize(key, default);
            u32::try_from(n).unwrap_or_else(|_| panic!("{key}={n}: too large"))
        };
        Config {
            apply_n: env_usize("BENCH_APPLY_N", 200),
            nodes: env_usize("BENCH_NODES", 20),
            replicas: u32_env("BENCH_PLACE_REPLICAS", 2000),
            chunk: u32_env("BENCH_PLACE_CHUNK", 100).max(1),
            place_runs: env_usize("BENCH_PLACE_RUNS", 3),
            kills: env_usize("BENCH_FAILOVER_KILLS", 5),
            leases: std::env::var("BENCH_FAILOVER_LEASES")
                .unwrap_or_else(|_| "5,2".into())
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("BENCH_FAILOVER_LEASES: {s:?} is not a number"))
                })
                .collect(),
        }
    }

    /// Deployments in the chunked variant.
    fn chunks(&self) -> u32 {
        self.replicas.div_ceil(self.chunk)
    }
}

/// Everything one run measured.
struct Run {
    cfg: Config,
    /// Apply latencies (ms) per backend.
    apply: Vec<(String, Vec<f64>)>,
    place: Vec<PlaceBackend>,
    failover: Vec<FailoverSeries>,
    placement_lines: Vec<String>,
    in_process: Vec<PlacementLine>,
    total_s: f64,
    load_before: String,
    load_after: String,
}

/// Apply → durable on one backend: warm-up calls, then `apply_n` timed ones.
fn apply_series(name: &str, etcd: Option<&EtcdCluster>, apply_n: usize) -> Vec<f64> {
    let sched = start_scheduler(etcd, "bench-apply");
    let api = Api::new(&sched.endpoint(), WAIT);
    for i in 0..WARMUP_APPLIES {
        timed_apply(&api, small_spec(&format!("warm-{i}")));
    }
    let lat: Vec<f64> = (0..apply_n)
        .map(|i| timed_apply(&api, small_spec(&format!("a-{i:05}"))))
        .collect();
    progress(&format!(
        "apply on {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {apply_n}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    ));
    lat
}

/// Placement through one backend's store, with `cfg.nodes` fake nodes: both variants.
fn place_backend(
    name: &str,
    etcd: Option<&EtcdCluster>,
    agents_rt: &tokio::runtime::Runtime,
    cfg: &Config,
) -> PlaceBackend {
    let nodes = cfg.nodes;
    let sched = start_scheduler(etcd, "bench-place");
    let api = Api::new(&sched.endpoint(), WAIT);
    let fleet: Vec<tokio::task::JoinHandle<()>> = (0..nodes)
        .map(|i| {
            agents_rt.spawn(fake_agent(
                format!("bench-n{i:03}"),
                vec![sched.endpoint()],
                Arc::default(),
            ))
        })
        .collect();
    poll(&format!("{nodes} fake nodes Ready on {name}"), WAIT, || {
        let listed = try_call(&api, api.client.clone().list_nodes(ListNodesRequest {})).ok()?;
        (listed.nodes.iter().filter(|n| n.ready).count() == nodes).then_some(())
    });
    progress(&format!("{name}: {nodes} fake nodes Ready"));
    let (single, single_failure) = place_single_runs(&api, &sched, name, cfg);
    let (chunked, chunked_failure) = place_chunked_runs(&api, &sched, name, cfg);
    for a in fleet {
        a.abort();
    }
    PlaceBackend {
        backend: name.to_string(),
        single,
        single_failure,
        chunked,
        chunked_failure,
    }
}

/// Variant a: one deployment of every replica, `cfg.place_runs` times unless one fails.
fn place_single_runs(
    api: &Api,
    sched: &SchedulerProc,
    name: &str,
    cfg: &Config,
) -> (Vec<f64>, Option<String>) {
    let replicas = cfg.replicas;
    let mut runs = Vec::new();
    for run in 0..cfg.place_runs {
        let names = vec![format!("place-{run}")];
        match place_run(api, sched, &names, replicas) {
            Ok(ms) => {
                progress(&format!(
                    "{name}: 1 deployment x {replicas} placed in {ms:.0} ms ({:.0}/s)",
                    per_s(replicas, ms)
                ));
                runs.push(ms);
            }
            Err(why) => {
                progress(&format!(
                    "{name}: 1 deployment x {replicas} NOT placed: {why}; skipping its other runs"
                ));
                // Gone, so the controller stops retrying its transaction on every pass.
                let _ = try_call(
                    api,
                    api.client.clone().delete(DeleteDeploymentRequest {
                        name: names[0].clone(),
                        ..Default::default()
                    }),
                );
                return (runs, Some(why));
            }
        }
    }
    (runs, None)
}

/// Variant b: the same replicas as deployments of `cfg.chunk`, applied back to back.
fn place_chunked_runs(
    api: &Api,
    sched: &SchedulerProc,
    name: &str,
    cfg: &Config,
) -> (Vec<f64>, Option<String>) {
    let (chunk, count) = (cfg.chunk, cfg.chunks());
    let mut runs = Vec::new();
    for run in 0..cfg.place_runs {
        let names: Vec<String> = (0..count).map(|j| format!("chunk-{run}-{j:03}")).collect();
        match place_run(api, sched, &names, chunk) {
            Ok(ms) => {
                progress(&format!(
                    "{name}: {count} deployments x {chunk} placed in {ms:.0} ms ({:.0}/s)",
                    per_s(count * chunk, ms)
                ));
                runs.push(ms);
            }
            Err(why) => {
                progress(&format!(
                    "{name}: {count} deployments x {chunk} NOT placed: {why}; skipping its other runs"
                ));
                return (runs, Some(why));
            }
        }
    }
    (runs, None)
}

fn print_table(run: &Run) {
    println!();
    println!(
        "berth store benchmarks ({} cores, {} MB RAM; release build; {}, fsync on)",
        cores(),
        meminfo_kb("MemTotal:") / 1024,
        etcd_version()
    );
    println!("{:-<120}", "");
    print_apply_rows(run);
    print_placement_rows(run);
    print_failover_rows(run);
    println!("{:-<120}", "");
    println!(
        "fake nodes: {} x {} CPUs / {} GiB, heartbeats every 200 ms; replicas {}m cpu / {} MiB; Get polled every {} ms",
        run.cfg.nodes,
        NODE_CPU_MILLIS / 1000,
        NODE_MEMORY >> 30,
        REPLICA_CPU_MILLIS,
        REPLICA_MEMORY >> 20,
        POLL.as_millis()
    );
    println!(
        "percentiles: nearest rank (the p99 of fewer than 100 samples is the maximum); bench took {:.0} s; 1-min load average {} at the start, {} at the end",
        run.total_s, run.load_before, run.load_after
    );
}

fn print_apply_rows(run: &Run) {
    for (name, lat) in &run.apply {
        row(
            &format!("Apply → durable, {name}, p50 / p99 / max"),
            &format!(
                "{:.2} / {:.2} / {:.2} ms",
                pct(lat, 0.5),
                pct(lat, 0.99),
                pct(lat, 1.0)
            ),
            &format!(
                "{} calls one at a time; mean {:.2} ms",
                lat.len(),
                mean(lat)
            ),
        );
    }
    println!(
        "  (Apply answers after its one store transaction commits: redb fsynced, etcd in a quorum's fsynced log; + a few reads)"
    );
    if run.in_process.is_empty() {
        row(
            "placement, in process (no store)",
            "not run",
            "cargo bench -p berth-scheduler --bench placement",
        );
    }
    for p in &run.in_process {
        row(
            "placement, in process (no store)",
            &format!("{:.0} /s", p.per_s),
            &format!(
                "{} (cargo bench -p berth-scheduler --bench placement); {} unschedulable, not counted",
                p.what, p.unschedulable
            ),
        );
    }
}

fn print_placement_rows(run: &Run) {
    let (replicas, chunk) = (run.cfg.replicas, run.cfg.chunk);
    let redb_single = run
        .place
        .first()
        .map(|b| pct(&b.single, 0.5))
        .filter(|m| *m > 0.0);
    let redb_chunked = run
        .place
        .first()
        .map(|b| pct(&b.chunked, 0.5))
        .filter(|m| *m > 0.0);
    for (variant, what) in [
        (Variant::Single, format!("1 deployment x {replicas}")),
        (
            Variant::Chunked,
            format!("{} deployments x {chunk}", run.cfg.chunks()),
        ),
    ] {
        let total = match variant {
            Variant::Single => replicas,
            Variant::Chunked => run.cfg.chunks() * chunk,
        };
        for b in &run.place {
            let (runs, failure, reference) = match variant {
                Variant::Single => (&b.single, &b.single_failure, redb_single),
                Variant::Chunked => (&b.chunked, &b.chunked_failure, redb_chunked),
            };
            let label = format!("placement via store, {what}, {}", b.backend);
            if runs.is_empty() {
                row(&label, "FAILED", failure.as_deref().unwrap_or("not run"));
                continue;
            }
            let median = pct(runs, 0.5);
            let rate = per_s(total, median);
            let ratio = match reference {
                Some(r) if b.backend != "redb" => {
                    format!(
                        "; {:.2}x redb's rate",
                        per_s(total, median) / per_s(total, r)
                    )
                }
                _ => String::new(),
            };
            row(
                &label,
                &format!("{rate:.0} /s"),
                &format!(
                    "median of {} ({:.2} s; range {:.2}-{:.2} s){ratio}",
                    runs.len(),
                    median / 1000.0,
                    pct(runs, 0.0) / 1000.0,
                    pct(runs, 1.0) / 1000.0,
                ),
            );
        }
    }
}

fn print_failover_rows(run: &Run) {
    for s in &run.failover {
        let elected: Vec<f64> = s.kills.iter().map(|k| k.elected_ms).collect();
        let ready: Vec<f64> = s.kills.iter().map(|k| k.node_ready_ms).collect();
        row(
            &format!("failover, lease {} s: kill → new leader elected", s.lease_s),
            &format!("{:.2} s median", pct(&elected, 0.5) / 1000.0),
            &format!(
                "{} kills, range {:.2}-{:.2} s",
                elected.len(),
                pct(&elected, 0.0) / 1000.0,
                pct(&elected, 1.0) / 1000.0
            ),
        );
        row(
            &format!("failover, lease {} s: kill → node Ready on it", s.lease_s),
            &format!("{:.2} s median", pct(&ready, 0.5) / 1000.0),
            &format!(
                "{} kills, range {:.2}-{:.2} s (agent backoff 100 ms doubling to 5 s)",
                ready.len(),
                pct(&ready, 0.0) / 1000.0,
                pct(&ready, 1.0) / 1000.0
            ),
        );
    }
    row(
        "  peer: Kubernetes leader election defaults",
        "15 s lease",
        "renew deadline 10 s, retry 2 s: a crashed leader is replaced after ~15-17 s (cited, not measured)",
    );
}

fn results_json(run: &Run) -> Value {
    json!({
        "host": {
            "cores": cores(),
            "mem_total_kb": meminfo_kb("MemTotal:"),
            "etcd": etcd_version(),
            "loadavg_1m_start": run.load_before,
            "loadavg_1m_end": run.load_after,
        },
        "apply_to_durable": {
            "calls": run.cfg.apply_n,
            "warmup_calls": WARMUP_APPLIES,
            "backends": run.apply.iter().map(|(name, lat)| json!({
                "backend": name,
                "latency_ms": stats(lat),
                "samples_ms": lat,
            })).collect::<Vec<_>>(),
        },
        "placement": placement_json(run),
        "failover": run.failover.iter().map(failover_json).collect::<Vec<_>>(),
        "k8s_leader_election_cited_not_measured": {
            "lease_duration_s": K8S_LEASE_S,
            "renew_deadline_s": K8S_RENEW_DEADLINE_S,
            "retry_period_s": K8S_RETRY_PERIOD_S,
        },
        "total_s": run.total_s,
    })
}

fn placement_json(run: &Run) -> Value {
    let cfg = &run.cfg;
    let single_total = cfg.replicas;
    let chunked_total = cfg.chunks() * cfg.chunk;
    json!({
        "nodes": cfg.nodes,
        "node_cpu_millis": NODE_CPU_MILLIS,
        "node_memory_bytes": NODE_MEMORY,
        "replica_cpu_millis": REPLICA_CPU_MILLIS,
        "replica_memory_bytes": REPLICA_MEMORY,
        "replicas": cfg.replicas,
        "chunk": cfg.chunk,
        "runs": cfg.place_runs,
        "poll_ms": u64::try_from(POLL.as_millis()).expect("the poll interval fits u64"),
        "etcd_default_max_txn_ops": ETCD_MAX_TXN_OPS,
        "in_process": {
            "lines": run.placement_lines,
            "placements_per_s": run.in_process.iter().map(PlacementLine::json).collect::<Vec<_>>(),
        },
        "backends": run.place.iter().map(|b| json!({
            "backend": b.backend,
            "single_deployment": {
                "replicas": single_total,
                "placed_ms": b.single,
                "median_ms": (!b.single.is_empty()).then(|| pct(&b.single, 0.5)),
                "per_s": (!b.single.is_empty()).then(|| per_s(single_total, pct(&b.single, 0.5))),
                "failure": b.single_failure,
            },
            "chunked": {
                "deployments": cfg.chunks(),
                "replicas": chunked_total,
                "placed_ms": b.chunked,
                "median_ms": (!b.chunked.is_empty()).then(|| pct(&b.chunked, 0.5)),
                "per_s": (!b.chunked.is_empty()).then(|| per_s(chunked_total, pct(&b.chunked, 0.5))),
                "failure": b.chunked_failure,
            },
        })).collect::<Vec<_>>(),
    })
}

fn failover_json(s: &FailoverSeries) -> Value {
    let elected: Vec<f64> = s.kills.iter().map(|k| k.elected_ms).collect();
    let ready: Vec<f64> = s.kills.iter().map(|k| k.node_ready_ms).collect();
    json!({
        "lease_s": s.lease_s,
        "schedulers": 3,
        "etcd_members": 1,
        "elected_ms": stats(&elected),
        "node_ready_ms": stats(&ready),
        "kills": s.kills.iter().map(|k| json!({
            "killed": k.killed,
            "new_leader": k.new_leader,
            "elected_ms": k.elected_ms,
            "node_ready_ms": k.node_ready_ms,
            "agent_session_ms": k.agent_session_ms,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Clone, Copy)]
enum Variant {
    Single,
    Chunked,
}

struct PlaceBackend {
    backend: String,
    /// Milliseconds from the Apply to every replica placed, per run.
    single: Vec<f64>,
    single_failure: Option<String>,
    chunked: Vec<f64>,
    chunked_failure: Option<String>,
}

struct FailoverSeries {
    lease_s: u64,
    kills: Vec<Kill>,
}

struct Kill {
    killed: usize,
    new_leader: usize,
    elected_ms: f64,
    node_ready_ms: f64,
    /// When the fake agent's session on the new leader opened (its own view).
    agent_session_ms: Option<f64>,
}

/// A scheduler on redb (`etcd` None) or on that etcd under a prefix of `tag`, leading once this
/// returns.
fn start_scheduler(etcd: Option<&EtcdCluster>, tag: &str) -> SchedulerProc {
    let Some(etcd) = etcd else {
        return SchedulerProc::start_exact(&[]);
    };
    let flags = etcd.scheduler_flags(tag, 5);
    let sched = SchedulerProc::start_exact(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    poll("the scheduler to lead", WAIT, || {
        sched.log().contains("elected leader").then_some(())
    });
    sched
}

/// One Apply (which must change something); its latency in ms.
fn timed_apply(api: &Api, spec: DeploymentSpec) -> f64 {
    let name = spec.name.clone();
    let mut c = api.client.clone();
    let t0 = Instant::now();
    let got = api.call(c.apply(ApplyRequest { spec: Some(spec) }));
    let ms = ms_since(t0);
    let got = got.unwrap_or_else(|s| panic!("apply {name}: {s:?}"));
    assert!(got.changed, "apply {name}: nothing changed");
    ms
}

fn small_spec(name: &str) -> DeploymentSpec {
    spec(name, 1)
}

fn spec(name: &str, replicas: u32) -> DeploymentSpec {
    DeploymentSpec {
        name: name.into(),
        image: "bench-store:1".into(),
        command: vec!["sleep".into(), "3600".into()],
        replicas,
        resources: Some(Resources {
            cpu_millis: REPLICA_CPU_MILLIS,
            memory_bytes: REPLICA_MEMORY,
        }),
        rollout: Some(RolloutSettings {
            // The fake nodes run nothing: no replica ever gets Ready, and the rollout must not
            // fail (and write) in the middle of the bench.
            progress_deadline_s: 3600,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Applies `names` (each `replicas` replicas) back to back and waits until Get shows every
/// replica of every one with a node: ms from the first Apply, or why not.
fn place_run(
    api: &Api,
    sched: &SchedulerProc,
    names: &[String],
    replicas: u32,
) -> Result<f64, String> {
    let log_from = sched.log().len();
    let t0 = Instant::now();
    for name in names {
        let applied = try_call(
            api,
            api.client.clone().apply(ApplyRequest {
                spec: Some(spec(name, replicas)),
            }),
        )
        .map_err(|s| format!("apply {name}: {s:?}"))?;
        assert!(applied.changed, "apply {name}: nothing changed");
    }
    let mut left: Vec<&String> = names.iter().collect();
    let mut last_log_check = Instant::now();
    loop {
        let mut still = Vec::new();
        for name in left {
            let d = try_call(
                api,
                api.client.clone().get(GetDeploymentRequest {
                    name: name.clone(),
                    ..Default::default()
                }),
            )
            .map_err(|s| format!("get {name}: {s:?}"))?;
            let placed = d.replica_status.len() == replicas as usize
                && d.replica_status.iter().all(|r| !r.node.is_empty());
            if !placed {
                still.push(name);
            }
        }
        left = still;
        if left.is_empty() {
            return Ok(ms_since(t0));
        }
        if last_log_check.elapsed() > Duration::from_millis(500) {
            last_log_check = Instant::now();
            if let Some(why) = store_refusal(&sched.log()[log_from..]) {
                return Err(why);
            }
        }
        if t0.elapsed() > PLACE_WITHIN {
            let placed = names.len() - left.len();
            return Err(format!(
                "not all placed within {PLACE_WITHIN:?} ({placed} of {} deployments done)",
                names.len()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// A store error the controller logs that means the replicas will never be written.
fn store_refusal(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("too many operations"))?;
    let msg = serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["fields"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| line.to_string());
    Some(format!(
        "the scheduler's store refused the replicas' transaction: {msg} (etcd --max-txn-ops defaults to {ETCD_MAX_TXN_OPS})"
    ))
}

/// Three schedulers on `etcd` with lease `lease_s`, one fake agent following the leader;
/// `kills` times: SIGKILL the leader, time the election and the node's return, restart it.
fn failover_series(
    etcd: &EtcdCluster,
    rt: &tokio::runtime::Runtime,
    lease_s: u64,
    kills: usize,
) -> FailoverSeries {
    let lease = u32::try_from(lease_s).expect("a lease in seconds");
    let flags = etcd.scheduler_flags(&format!("bench-ha-{lease_s}"), lease);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut scheds: Vec<SchedulerProc> =
        (0..3).map(|_| SchedulerProc::start_exact(&flags)).collect();
    let endpoints: Vec<String> = scheds.iter().map(SchedulerProc::endpoint).collect();
    let node = format!("bench-ha{lease_s}");
    let sessions: Sessions = Arc::default();
    let agent = rt.spawn(fake_agent(
        node.clone(),
        endpoints.clone(),
        sessions.clone(),
    ));
    let mut leader = poll("one leader", WAIT, || {
        let leading: Vec<usize> = (0..scheds.len())
            .filter(|&i| count(&scheds[i].log(), "elected leader") > 0)
            .collect();
        (leading.len() == 1).then(|| leading[0])
    });
    let api = Api::new(&endpoints[leader], WAIT);
    poll("the node Ready on the leader", WAIT, || {
        node_ready(&api, &node).then_some(())
    });
    drop(api);
    progress(&format!(
        "lease {lease_s} s: scheduler {leader} leads, node {node} Ready"
    ));
    let mut out = Vec::new();
    for k in 0..kills {
        let before: Vec<usize> = scheds
            .iter()
            .map(|s| count(&s.log(), "elected leader"))
            .collect();
        scheds[leader].kill9();
        let t0 = Instant::now();
        let new_leader = poll_every("a new leader", WAIT, LOG_POLL, || {
            (0..scheds.len())
                .filter(|&i| i != leader)
                .find(|&i| count(&scheds[i].log(), "elected leader") > before[i])
        });
        let elected_ms = ms_since(t0);
        let api = Api::new(&endpoints[new_leader], WAIT);
        poll_every("the node Ready on the new leader", WAIT, LOG_POLL, || {
            node_ready(&api, &node).then_some(())
        });
        let node_ready_ms = ms_since(t0);
        let agent_session_ms = sessions
            .lock()
            .unwrap()
            .iter()
            .find(|(at, addr)| *at > t0 && *addr == endpoints[new_leader])
            .map(|(at, _)| at.duration_since(t0).as_secs_f64() * 1000.0);
        progress(&format!(
            "lease {lease_s} s, kill {}: scheduler {leader} killed; {new_leader} elected after {:.2} s, node Ready on it after {:.2} s",
            k + 1,
            elected_ms / 1000.0,
            node_ready_ms / 1000.0
        ));
        out.push(Kill {
            killed: leader,
            new_leader,
            elected_ms,
            node_ready_ms,
            agent_session_ms,
        });
        // The killed one comes back as a standby before the next kill.
        let standing = count(&scheds[leader].log(), "standing by");
        scheds[leader].restart();
        let back = leader;
        poll("the restarted scheduler standing by", WAIT, || {
            (count(&scheds[back].log(), "standing by") > standing).then_some(())
        });
        leader = new_leader;
    }
    agent.abort();
    FailoverSeries {
        lease_s,
        kills: out,
    }
}

fn node_ready(api: &Api, node: &str) -> bool {
    try_call(api, api.client.clone().list_nodes(ListNodesRequest {}))
        .is_ok_and(|l| l.nodes.iter().any(|n| n.name == node && n.ready))
}

/// A call through `api`'s runtime, with a deadline.
fn try_call<T>(
    api: &Api,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    api.call(async move {
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("bench: no answer")))
    })
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Polls `check` every [`POLL`] until it gives a value; panics after `within`.
fn poll<T>(what: &str, within: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll_every(what, within, POLL, check)
}

fn poll_every<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        std::thread::sleep(every);
    }
}

/// A line on stderr, stamped with the seconds since the bench started.
fn progress(msg: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[bench-store {t:6.1} s] {msg}");
}

fn etcd_version() -> String {
    std::process::Command::new(berth_tests::etcd::ETCD)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.replace("Version: ", "").trim().to_string())
        })
        .unwrap_or_else(|| "etcd".into())
}

fn per_s(replicas: u32, ms: f64) -> f64 {
    if ms <= 0.0 {
        0.0
    } else {
        f64::from(replicas) / (ms / 1000.0)
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / float_len(values.len())
    }
}

fn row(what: &str, value: &str, note: &str) {
    println!("{what:<58} {value:>24}  {note}");
}
