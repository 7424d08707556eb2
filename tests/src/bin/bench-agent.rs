//! bench-agent: measures a real `berth-agent` (release build) driven by the fake scheduler, and
//! prints it beside the podman/conmon figures `benches/agent.sh` measured in the same run.
//!
//! 1. the agent's idle RSS once registered, after ~2 s of heartbeats;
//! 2. assignment sent → Running event received, one new container per assignment set, warm
//!    image (`BENCH_LATENCY_N`, default 100), with the agent-side split read from its log;
//! 3. berth-shim RSS and PSS per container with those containers running;
//! 4. `BENCH_DENSITY_N` (default 200) `sleep` containers assigned at once: time to all Running,
//!    agent RSS + shim PSS (and RSS), and the drop of MemAvailable per container;
//! 5. teardown, then a check that nothing of the node is left.
//!
//! Env: `BERTH_BIN_DIR` (the release binaries), `BENCH_OUT` (the JSON results file),
//! `BENCH_PEER` (the JSON the script wrote for podman; optional).
//! Run it through `bash benches/agent.sh`, as root.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_proto::v1::{Assignment, ContainerEvent, ContainerState, Resources};
use berth_tests::agent_node::{AgentNode, AgentOptions, unique_node_name};
use berth_tests::bench::{
    cores, env_usize, float, float_len, float_signed, meminfo_kb, pct, stats, whole,
};
use berth_tests::fake_scheduler::{FakeScheduler, assignment, state_of};
use berth_tests::{Berth, busybox_image, require_root};
use serde_json::{Value, json};

const IMAGE: &str = "bench-busybox:1";
const WAIT: Duration = Duration::from_secs(120);
/// kubelet's idle RSS as published elsewhere; not measured here.
const KUBELET_IDLE_CITED_MB: f64 = 50.0;

fn main() {
    require_root();
    let latency_n = env_usize("BENCH_LATENCY_N", 100);
    let density_n = env_usize("BENCH_DENSITY_N", 200);
    let out_path = berth_tests::bench::out_path("agent.json");
    let peer: Option<Value> = std::env::var_os("BENCH_PEER").map(|p| {
        let text = fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("BENCH_PEER {}: {e}", Path::new(&p).display()));
        serde_json::from_str(&text).expect("BENCH_PEER holds JSON")
    });

    let sched = FakeScheduler::start();
    let name = unique_node_name("bench");
    let node = start_node(&sched, &name);
    let agent_pid = node.pid().expect("the agent runs");
    let data_dir = node.data_dir().to_path_buf();
    let netns = node.netns_name().to_string();
    sched.wait_applied(&name, 1, WAIT);

    let idle = idle_phase(&sched, &name, agent_pid);
    warm_up(&sched, &name);
    let latency = latency_phase(&sched, &node, latency_n);
    let shims = shims_phase(&data_dir, agent_pid, latency_n);
    let teardown_latency = teardown(&sched, &name, &latency.set);
    let density = density_phase(&sched, &name, &data_dir, agent_pid, density_n);
    let teardown_density = teardown(&sched, &name, &density.set);

    // 5. Nothing left once the node is dropped.
    drop(node);
    drop(sched);
    let run = Run {
        latency_n,
        density_n,
        idle,
        latency,
        shims,
        density,
        teardown_s: (teardown_latency, teardown_density),
        leftovers: leftovers(&data_dir, &name, &netns),
        peer: Peer::of(peer.as_ref()),
    };
    print_table(&run);
    let results = results_json(&run, peer);
    berth_tests::bench::write_results(&out_path, &results);
    if !run.leftovers.is_empty() {
        std::process::exit(1);
    }
}

/// Everything one run measured.
struct Run {
    latency_n: usize,
    density_n: usize,
    idle: Idle,
    latency: Latency,
    shims: Shims,
    density: Density,
    /// Teardown of the latency set and of the density set, seconds.
    teardown_s: (f64, f64),
    leftovers: Vec<String>,
    peer: Peer,
}

/// Phase 1: the registered agent with nothing assigned.
struct Idle {
    rss_kb: u64,
    heartbeats: usize,
}

/// Phase 2: one new container per assignment set.
struct Latency {
    set: Vec<Assignment>,
    samples: Vec<Sample>,
    /// Sent → the agent's "applied assignments" log line, ms.
    applied: Vec<f64>,
    received: Vec<f64>,
    event_at: Vec<f64>,
    started: Vec<f64>,
    /// Applied → Running event sent, ms (the agent's own work).
    start_work: Vec<f64>,
}

/// Phase 3: the shims with the latency set running.
struct Shims {
    mems: Vec<Mem>,
    agent_rss_kb: u64,
    top_mappings: Vec<(String, u64, u64)>,
    rss: Vec<f64>,
    pss: Vec<f64>,
}

/// Phase 4: every container assigned at once.
struct Density {
    set: Vec<Assignment>,
    all_running_ms: f64,
    last_started_ms: f64,
    agent_rss_before_kb: u64,
    agent_rss_kb: u64,
    avail_before_kb: u64,
    avail_after_kb: u64,
    /// Signed: other work on the host can move it either way.
    avail_drop_kb: i64,
    shim_pss_sum_kb: u64,
    shim_rss_sum_kb: u64,
    cgroups_kb: u64,
}

/// The podman/conmon figures the script measured (empty without `BENCH_PEER`).
struct Peer {
    start_ms: Vec<f64>,
    conmon: Vec<Mem>,
    conmon_rss: Vec<f64>,
    conmon_pss: Vec<f64>,
}

impl Peer {
    fn of(peer: Option<&Value>) -> Self {
        let start_ms: Vec<f64> = peer
            .and_then(|p| p["start_s"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|s| s * 1000.0)
                    .collect()
            })
            .unwrap_or_default();
        let conmon: Vec<Mem> = peer
            .and_then(|p| p["conmon"].as_array())
            .map(|a| {
                a.iter()
                    .map(|c| Mem {
                        pid: c["pid"]
                            .as_u64()
                            .and_then(|p| u32::try_from(p).ok())
                            .unwrap_or(0),
                        rss_kb: c["rss_kb"].as_u64().unwrap_or(0),
                        pss_kb: c["pss_kb"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Peer {
            start_ms,
            conmon_rss: kb_of(&conmon, |s| s.rss_kb),
            conmon_pss: kb_of(&conmon, |s| s.pss_kb),
            conmon,
        }
    }
}

/// Starts the agent as a simulated node of the fake scheduler, with the bench image stored.
fn start_node(sched: &FakeScheduler, name: &str) -> AgentNode {
    let berth = Berth::new();
    busybox_image(&berth, IMAGE);
    // Room for the density phase whatever the agent does with freed addresses.
    sched.set_pod_cidr(name, "10.93.0.0/23");
    sched.assign(name, vec![]);
    let opts = AgentOptions {
        // A simulated node large enough that placement never refuses a container here.
        cpu: "64".to_string(),
        memory: "64g".to_string(),
        // busybox's sleep as a container's init ignores SIGTERM: 1 s to SIGKILL, not 10.
        extra_args: vec!["--stop-grace".to_string(), "1".to_string()],
        ..AgentOptions::default()
    };
    AgentNode::start_in(berth, sched, name, opts)
}

/// 1. Idle.
fn idle_phase(sched: &FakeScheduler, name: &str, agent_pid: u32) -> Idle {
    std::thread::sleep(Duration::from_secs(2));
    let rss_kb = vm_rss_kb(agent_pid);
    let heartbeats = sched.node(name).heartbeats;
    println!(
        "phase 1: agent idle RSS {} after {heartbeats} heartbeats",
        mb(rss_kb)
    );
    Idle { rss_kb, heartbeats }
}

/// Warm-up: the first container unpacks the image's layer; later ones reuse it.
fn warm_up(sched: &FakeScheduler, name: &str) {
    sched.assign(name, vec![sleeper("warm-0")]);
    sched.wait_state(name, "warm-0", ContainerState::Running, WAIT);
    sched.assign(name, vec![]);
    sched.wait_gone(name, "warm-0", WAIT);
}

/// 2. Latency, one new container per set.
fn latency_phase(sched: &FakeScheduler, node: &AgentNode, latency_n: usize) -> Latency {
    let name = node.name();
    let mut set = Vec::new();
    let mut samples = Vec::new();
    for i in 0..latency_n {
        let id = format!("lat-{i:03}");
        set.push(sleeper(&id));
        let since = sched.events(name).len();
        let sent_unix_ms = unix_ms();
        let sent = Instant::now();
        let generation = sched.assign(name, set.clone());
        let event = sched.wait_event_since(name, since, &format!("{id} Running"), WAIT, |e| {
            running_of(e, &id).then(|| e.clone())
        });
        let received_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let status = event.status.expect("a Running event has a status");
        samples.push(Sample {
            id,
            generation,
            sent_unix_ms,
            received_ms,
            event_at_ms: float_signed(event.at_ms) - sent_unix_ms,
            started_ms: float_signed(status.started_at_ms) - sent_unix_ms,
        });
    }
    let applied_at = applied_times(&node.log());
    let mut applied = Vec::new();
    for s in &samples {
        if let Some(at) = applied_at.get(&s.generation) {
            applied.push(at - s.sent_unix_ms);
        }
    }
    let received: Vec<f64> = samples.iter().map(|s| s.received_ms).collect();
    let start_work: Vec<f64> = samples
        .iter()
        .filter_map(|s| {
            let at = applied_at.get(&s.generation)?;
            Some(s.event_at_ms - (at - s.sent_unix_ms))
        })
        .collect();
    println!(
        "phase 2: {latency_n} containers, sent → Running received p50 {:.1} ms p99 {:.1} ms",
        pct(&received, 0.5),
        pct(&received, 0.99)
    );
    Latency {
        set,
        event_at: samples.iter().map(|s| s.event_at_ms).collect(),
        started: samples.iter().map(|s| s.started_ms).collect(),
        samples,
        applied,
        received,
        start_work,
    }
}

/// 3. Shims with `latency_n` containers running.
fn shims_phase(data_dir: &Path, agent_pid: u32, latency_n: usize) -> Shims {
    let mems = shim_memory(data_dir);
    assert_eq!(mems.len(), latency_n, "one shim per container");
    let agent_rss_kb = vm_rss_kb(agent_pid);
    let top_mappings = top_mappings(mems[0].pid, 6);
    let rss = kb_of(&mems, |s| s.rss_kb);
    let pss = kb_of(&mems, |s| s.pss_kb);
    println!(
        "phase 3: {} shims, RSS p50 {} PSS p50 {}; agent RSS {}",
        mems.len(),
        mb(whole(pct(&rss, 0.5))),
        mb(whole(pct(&pss, 0.5))),
        mb(agent_rss_kb)
    );
    Shims {
        mems,
        agent_rss_kb,
        top_mappings,
        rss,
        pss,
    }
}

/// 4. Density: all at once on the now empty node.
fn density_phase(
    sched: &FakeScheduler,
    name: &str,
    data_dir: &Path,
    agent_pid: u32,
    density_n: usize,
) -> Density {
    std::thread::sleep(Duration::from_secs(2));
    let avail_before_kb = mem_available_kb();
    let agent_rss_before_kb = vm_rss_kb(agent_pid);
    let set: Vec<Assignment> = (0..density_n)
        .map(|i| sleeper(&format!("den-{i:03}")))
        .collect();
    let ids: BTreeSet<String> = set.iter().map(|a| a.container_id.clone()).collect();
    let since = sched.events(name).len();
    let sent_unix_ms = unix_ms();
    let sent = Instant::now();
    sched.assign(name, set.clone());
    wait_all_running(sched, name, since, &ids);
    let all_running_ms = sent.elapsed().as_secs_f64() * 1000.0;
    let last_started_ms = sched
        .last_heartbeat(name)
        .expect("a heartbeat")
        .containers
        .iter()
        .filter(|c| ids.contains(&c.container_id))
        .map(|c| float_signed(c.started_at_ms) - sent_unix_ms)
        .fold(0.0, f64::max);
    std::thread::sleep(Duration::from_secs(2));
    let shims = shim_memory(data_dir);
    assert_eq!(shims.len(), density_n, "one shim per container");
    let agent_rss_kb = vm_rss_kb(agent_pid);
    let avail_after_kb = mem_available_kb();
    // Signed: other work on the host can move it either way.
    let avail_drop_kb = signed(avail_before_kb) - signed(avail_after_kb);
    println!(
        "phase 4: {density_n} Running after {:.2} s; MemAvailable drop {:.2} MB",
        all_running_ms / 1000.0,
        float_signed(avail_drop_kb) / 1024.0
    );
    Density {
        set,
        all_running_ms,
        last_started_ms,
        agent_rss_before_kb,
        agent_rss_kb,
        avail_before_kb,
        avail_after_kb,
        avail_drop_kb,
        shim_pss_sum_kb: shims.iter().map(|s| s.pss_kb).sum(),
        shim_rss_sum_kb: shims.iter().map(|s| s.rss_kb).sum(),
        cgroups_kb: cgroup_usage_kb(name, &ids),
    }
}

/// Waits until every one of `ids` is Running, by its events since `since` or by a heartbeat.
fn wait_all_running(sched: &FakeScheduler, name: &str, since: usize, ids: &BTreeSet<String>) {
    let n = ids.len();
    sched.wait_node(
        name,
        &format!("{n} Running"),
        Duration::from_secs(300),
        |r| {
            let by_events: BTreeSet<&str> = r.events[since..]
                .iter()
                .filter_map(|e| e.status.as_ref())
                .filter(|s| state_of(s) == ContainerState::Running)
                .map(|s| s.container_id.as_str())
                .collect();
            let by_heartbeat = r.last_heartbeat.as_ref().is_some_and(|h| {
                h.containers
                    .iter()
                    .filter(|c| ids.contains(&c.container_id))
                    .filter(|c| state_of(c) == ContainerState::Running)
                    .count()
                    == n
            });
            (by_heartbeat || ids.iter().all(|id| by_events.contains(id.as_str()))).then_some(())
        },
    );
}

/// The table: memory, then latency, then density.
fn print_table(run: &Run) {
    println!();
    println!(
        "berth-agent benchmarks ({} cores, {} MB RAM)",
        cores(),
        meminfo_kb("MemTotal:") / 1024
    );
    println!("{:-<96}", "");
    print_memory_rows(run);
    print_latency_rows(run);
    print_density_rows(run);
    println!("{:-<96}", "");
    println!("percentiles: nearest rank (p99 of 20 is the maximum)");
    println!(
        "berth-shim pid {} largest mappings (RSS / PSS):",
        run.shims.mems[0].pid
    );
    for (name, rss, pss) in &run.shims.top_mappings {
        println!("  {:>8} {:>8}  {name}", kb(*rss), kb(*pss));
    }
}

/// Ours over conmon's, in words.
fn ratio_text(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 {
        format!("{:.2}x conmon's", ours / theirs)
    } else {
        "no peer figure".to_string()
    }
}

fn print_memory_rows(run: &Run) {
    let (idle, shims, peer) = (&run.idle, &run.shims, &run.peer);
    row(
        "agent idle RSS (registered, nothing assigned)",
        &mb(idle.rss_kb),
        &format!(
            "target < 20 MB: {}; kubelet ~{KUBELET_IDLE_CITED_MB} MB+ is a cited figure, not measured here",
            if idle.rss_kb < 20 * 1024 {
                "met"
            } else {
                "MISSED"
            }
        ),
    );
    row(
        &format!(
            "agent RSS, {} / {} containers",
            run.latency_n, run.density_n
        ),
        &format!(
            "{} / {}",
            mb(shims.agent_rss_kb),
            mb(run.density.agent_rss_kb)
        ),
        "",
    );
    row(
        &format!("berth-shim RSS per ctr, p50 of {}", shims.mems.len()),
        &mb(whole(pct(&shims.rss, 0.5))),
        &ratio_text(pct(&shims.rss, 0.5), pct(&peer.conmon_rss, 0.5)),
    );
    row(
        &format!("berth-shim PSS per ctr, p50 of {}", shims.mems.len()),
        &mb(whole(pct(&shims.pss, 0.5))),
        &ratio_text(pct(&shims.pss, 0.5), pct(&peer.conmon_pss, 0.5)),
    );
    row(
        &format!("  peer: conmon RSS / PSS, p50 of {}", peer.conmon.len()),
        &format!(
            "{} / {}",
            mb(whole(pct(&peer.conmon_rss, 0.5))),
            mb(whole(pct(&peer.conmon_pss, 0.5)))
        ),
        "podman run -d busybox sleep 1000 (crun)",
    );
}

/// "p50 / p99 ms" of `values`.
fn p50_p99(values: &[f64]) -> String {
    format!("{:.1} / {:.1} ms", pct(values, 0.5), pct(values, 0.99))
}

fn print_latency_rows(run: &Run) {
    let l = &run.latency;
    row(
        "assign → Running event received, p50 / p99",
        &p50_p99(&l.received),
        &format!("{} containers, one new per set, warm image", run.latency_n),
    );
    row(
        "  sent → agent applied set (log), p50 / p99",
        &p50_p99(&l.applied),
        "harness → gRPC → agent",
    );
    row(
        "  applied → Running event sent, p50 / p99",
        &p50_p99(&l.start_work),
        "agent side: rootfs, net, shim, runtime (ms clock)",
    );
    row(
        "  sent → shim started_at, p50 / p99",
        &p50_p99(&l.started),
        "",
    );
    row(
        &format!(
            "  peer: podman run -d, p50 / p99 of {}",
            run.peer.start_ms.len()
        ),
        &p50_p99(&run.peer.start_ms),
        "whole CLI: different work (no scheduler, no pod network)",
    );
}

fn print_density_rows(run: &Run) {
    let (d, n) = (&run.density, run.density_n);
    let per = |total: u64| total / u64::try_from(n).expect("a count fits u64");
    row(
        &format!("{n} containers at once: all Running seen"),
        &format!("{:.2} s", d.all_running_ms / 1000.0),
        &format!(
            "last started_at {:.2} s after the send",
            d.last_started_ms / 1000.0
        ),
    );
    let overhead_kb = d.agent_rss_kb + d.shim_pss_sum_kb;
    row(
        "  agent RSS + Σ shim PSS",
        &mb(overhead_kb),
        &format!("{} per container", kb(per(overhead_kb))),
    );
    row(
        "  agent RSS + Σ shim RSS",
        &mb(d.agent_rss_kb + d.shim_rss_sum_kb),
        &format!(
            "{} per container",
            kb(per(d.agent_rss_kb + d.shim_rss_sum_kb))
        ),
    );
    row(
        "  containers' memory cgroups (Σ usage_in_bytes)",
        &mb(d.cgroups_kb),
        &format!(
            "{} per container: the sleeps, their page tables, kernel objects",
            kb(per(d.cgroups_kb))
        ),
    );
    row(
        "  MemAvailable drop, system-wide",
        &format!("{:.2} MB", float_signed(d.avail_drop_kb) / 1024.0),
        &format!(
            "{} kB per container (everything on the host: noisy)",
            d.avail_drop_kb / i64::try_from(n).expect("a count fits i64")
        ),
    );
    row(
        &format!("teardown {} / {n} (stop grace 1 s)", run.latency_n),
        &format!("{:.2} / {:.2} s", run.teardown_s.0, run.teardown_s.1),
        "",
    );
    row(
        "leftovers after the node's cleanup",
        if run.leftovers.is_empty() {
            "none"
        } else {
            "SOME"
        },
        &run.leftovers.join("; "),
    );
}

/// The results file: every figure, the samples, and the peer's JSON as given.
fn results_json(run: &Run, peer: Option<Value>) -> Value {
    let (idle, shims) = (&run.idle, &run.shims);
    json!({
        "host": { "cores": cores(), "mem_total_kb": meminfo_kb("MemTotal:") },
        "agent_idle": {
            "rss_kb": idle.rss_kb,
            "heartbeats": idle.heartbeats,
            "target_kb": 20 * 1024,
            "kubelet_idle_mb_cited_not_measured": KUBELET_IDLE_CITED_MB,
        },
        "shim_memory": {
            "containers": shims.mems.len(),
            "agent_rss_kb": shims.agent_rss_kb,
            "rss_kb": stats(&shims.rss),
            "pss_kb": stats(&shims.pss),
            "top_mappings": shims.top_mappings.iter().map(|(n, r, p)| json!({"name": n, "rss_kb": r, "pss_kb": p})).collect::<Vec<_>>(),
            "peer_conmon": {
                "containers": run.peer.conmon.len(),
                "rss_kb": stats(&run.peer.conmon_rss),
                "pss_kb": stats(&run.peer.conmon_pss),
                "pids": run.peer.conmon.iter().map(|c| c.pid).collect::<Vec<_>>(),
            },
            "ratio_rss_p50": ratio_value(pct(&shims.rss, 0.5), pct(&run.peer.conmon_rss, 0.5)),
            "ratio_pss_p50": ratio_value(pct(&shims.pss, 0.5), pct(&run.peer.conmon_pss, 0.5)),
        },
        "latency_ms": latency_json(run),
        "density": density_json(run),
        "teardown_s": { "latency_set": run.teardown_s.0, "density_set": run.teardown_s.1 },
        "leftovers": run.leftovers,
        "peer": peer,
    })
}

fn latency_json(run: &Run) -> Value {
    let l = &run.latency;
    json!({
        "containers": run.latency_n,
        "received": stats(&l.received),
        "applied": stats(&l.applied),
        "applied_to_event": stats(&l.start_work),
        "event_at": stats(&l.event_at),
        "started_at": stats(&l.started),
        "samples": l.samples.iter().map(|s| json!({
            "id": s.id, "generation": s.generation, "received_ms": s.received_ms,
            "event_at_ms": s.event_at_ms, "started_ms": s.started_ms,
        })).collect::<Vec<_>>(),
        "peer_podman_run_d": stats(&run.peer.start_ms),
    })
}

fn density_json(run: &Run) -> Value {
    let (d, n) = (&run.density, float_len(run.density_n));
    let overhead_kb = d.agent_rss_kb + d.shim_pss_sum_kb;
    json!({
        "containers": run.density_n,
        "all_running_ms": d.all_running_ms,
        "last_started_ms": d.last_started_ms,
        "agent_rss_before_kb": d.agent_rss_before_kb,
        "agent_rss_kb": d.agent_rss_kb,
        "shim_pss_sum_kb": d.shim_pss_sum_kb,
        "shim_rss_sum_kb": d.shim_rss_sum_kb,
        "overhead_pss_kb": overhead_kb,
        "overhead_pss_per_container_kb": float(overhead_kb) / n,
        "overhead_rss_per_container_kb": float(d.agent_rss_kb + d.shim_rss_sum_kb) / n,
        "mem_available_before_kb": d.avail_before_kb,
        "mem_available_after_kb": d.avail_after_kb,
        "mem_available_drop_kb": d.avail_drop_kb,
        "mem_available_drop_per_container_kb": float_signed(d.avail_drop_kb) / n,
        "container_cgroups_usage_kb": d.cgroups_kb,
        "container_cgroups_usage_per_container_kb": float(d.cgroups_kb) / n,
    })
}

/// A kB figure as signed, for differences.
fn signed(kb: u64) -> i64 {
    i64::try_from(kb).unwrap_or_else(|_| panic!("{kb} kB does not fit i64"))
}

struct Sample {
    id: String,
    generation: u64,
    sent_unix_ms: f64,
    /// Harness: `assign` called → Running event received.
    received_ms: f64,
    /// Agent clock when it sent the event, from the send (ms resolution).
    event_at_ms: f64,
    /// The shim's `started_at_ms`, from the send.
    started_ms: f64,
}

struct Mem {
    pid: u32,
    rss_kb: u64,
    pss_kb: u64,
}

/// A `sleep 1000` container with small requests.
fn sleeper(id: &str) -> Assignment {
    let mut a = assignment(id, IMAGE);
    a.command = vec!["sleep".into(), "1000".into()];
    a.resources = Some(Resources {
        cpu_millis: 5,
        memory_bytes: 16 << 20,
    });
    a
}

fn running_of(event: &ContainerEvent, id: &str) -> bool {
    event
        .status
        .as_ref()
        .is_some_and(|s| s.container_id == id && state_of(s) == ContainerState::Running)
}

/// Assigns nothing and waits until the heartbeat lists none of `set`; seconds taken.
fn teardown(sched: &FakeScheduler, node: &str, set: &[Assignment]) -> f64 {
    let started = Instant::now();
    sched.assign(node, vec![]);
    let ids: BTreeSet<&str> = set.iter().map(|a| a.container_id.as_str()).collect();
    sched.wait_for(node, "every container gone", WAIT, |h| {
        (!h.containers
            .iter()
            .any(|c| ids.contains(c.container_id.as_str())))
        .then_some(())
    });
    started.elapsed().as_secs_f64()
}

/// Unix time in milliseconds (fractional).
fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
        * 1000.0
}

/// Generation → unix ms of the agent's "applied assignments" log line (JSON log).
fn applied_times(log: &str) -> BTreeMap<u64, f64> {
    let mut out = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("applied assignments")) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(generation), Some(at)) = (
            v["fields"]["generation"].as_u64(),
            v["timestamp"].as_str().and_then(rfc3339_ms),
        ) else {
            continue;
        };
        out.insert(generation, at);
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z` (UTC, as tracing-subscriber writes it) → unix ms.
fn rfc3339_ms(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z').or(text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + min * 60 + s;
    Some((float_signed(secs) + frac) * 1000.0)
}

/// The shims of every container in the data dir, from `shim.json`.
fn shim_memory(data_dir: &Path) -> Vec<Mem> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(data_dir.join("agent/containers")) else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(text) = fs::read_to_string(entry.path().join("shim.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let Some(pid) = v["shim_pid"].as_u64() else {
            continue;
        };
        let Ok(pid) = u32::try_from(pid) else {
            continue;
        };
        let Some((rss_kb, pss_kb)) = rss_pss_kb(pid) else {
            continue;
        };
        out.push(Mem {
            pid,
            rss_kb,
            pss_kb,
        });
    }
    out
}

/// The summed `memory.usage_in_bytes` (kB) of the containers' v1 memory cgroups
/// (`/sys/fs/cgroup/memory/berth-agent/NODE/ID`); the shims are not in them.
fn cgroup_usage_kb(node: &str, ids: &BTreeSet<String>) -> u64 {
    let base = Path::new("/sys/fs/cgroup/memory/berth-agent").join(node);
    ids.iter()
        .filter_map(|id| {
            fs::read_to_string(base.join(id).join("memory.usage_in_bytes"))
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum::<u64>()
        / 1024
}

/// Rss and Pss (kB) from /proc/PID/smaps_rollup.
fn rss_pss_kb(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some((field_kb(&text, "Rss:")?, field_kb(&text, "Pss:")?))
}

/// The mappings of `pid` with the most RSS, summed by name: (name, rss kB, pss kB).
fn top_mappings(pid: u32, n: usize) -> Vec<(String, u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: range perms offset dev inode [path].
            let fields: Vec<&str> = line.split_whitespace().collect();
            current = match fields.get(5) {
                Some(path) => format!("{path} ({})", fields[1]),
                None => format!("[anon] ({})", fields[1]),
            };
        } else if let Some(v) = line.strip_prefix("Rss:") {
            by_name.entry(current.clone()).or_default().0 += parse_kb(v);
        } else if let Some(v) = line.strip_prefix("Pss:") {
            by_name.entry(current.clone()).or_default().1 += parse_kb(v);
        }
    }
    let mut rows: Vec<(String, u64, u64)> =
        by_name.into_iter().map(|(k, (r, p))| (k, r, p)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(n);
    rows
}

fn parse_kb(v: &str) -> u64 {
    v.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn field_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)).map(parse_kb)
}

fn vm_rss_kb(pid: u32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    field_kb(&text, "VmRSS:").expect("VmRSS")
}

/// MemAvailable, the median of five readings 100 ms apart.
fn mem_available_kb() -> u64 {
    let mut v: Vec<u64> = (0..5)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            meminfo_kb("MemAvailable:")
        })
        .collect();
    v.sort_unstable();
    v[2]
}

/// What is left of the node after its cleanup: processes naming its data dir, mounts under
/// it, the data dir, cgroups, the network namespace.
fn leftovers(data_dir: &Path, node: &str, netns: &str) -> Vec<String> {
    let mut out = Vec::new();
    let dir = data_dir.to_string_lossy().into_owned();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir) {
                out.push(format!("process {name}"));
            }
        }
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let n = mounts.lines().filter(|l| l.contains(&dir)).count();
    if n > 0 {
        out.push(format!("{n} mounts under {dir}"));
    }
    if data_dir.exists() {
        out.push(format!("{dir} exists"));
    }
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let cg = e.path().join("berth-agent").join(node);
            if cg.exists() {
                out.push(format!("cgroup {}", cg.display()));
            }
        }
    }
    if Path::new("/run/netns").join(netns).exists() {
        out.push(format!("netns {netns}"));
    }
    out
}

fn ratio_value(ours: f64, theirs: f64) -> Value {
    if theirs > 0.0 {
        json!(ours / theirs)
    } else {
        Value::Null
    }
}

fn kb_of(mems: &[Mem], f: impl Fn(&Mem) -> u64) -> Vec<f64> {
    mems.iter().map(|m| float(f(m))).collect()
}

fn mb(kb: u64) -> String {
    format!("{:.2} MB", float(kb) / 1024.0)
}

fn kb(kb: u64) -> String {
    format!("{kb} kB")
}

fn row(what: &str, value: &str, note: &str) {
    println!("{what:<50} {value:>18}  {note}");
}
