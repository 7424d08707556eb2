//! bench-propagation: endpoint propagation on the real path — a replica's readiness probe
//! passes in its agent, the scheduler hears it over the session stream, computes the
//! ServiceSet and streams it to every agent, and each agent programs nft — until the replica
//! is reachable through the virtual IP on every node.
//!
//! A real `berth-scheduler` (release build, its defaults) and three real agents on the netns
//! fabric. The service `prop` has ONE busybox httpd replica, port 80 → 8080, readiness = exec
//! probe `test -f /tmp/ready` every [`PERIOD_MS`] with failure and success thresholds 1. A
//! client deployment puts a sleeping container on each node; on each node a prober thread in
//! that container's netns (the node's netns where no client landed: the table says which)
//! connects to VIP:80. A VIP without endpoints answers a connect with a TCP RST at once.
//!
//! Each of `BENCH_CHANGES` (100) changes: remove /tmp/ready (through `/proc/PID/root` of the
//! container's init, which is instant and exactly timed, unlike an exec), wait until every
//! prober is refused, then write the file again. Start = the timestamp of the agent's JSON
//! log line `readiness changed` (ready = true); end = the first connect that succeeds on the
//! last node (probers try every ~[`FAST`]). Also per node: the first connect, and the agent's
//! `applied services` line (what the scheduler and the stream took, plus nft). The file
//! write → probe passing is the probe period, not propagation, and is reported apart.
//!
//! Env: `BERTH_BIN_DIR` (the release binaries), `BENCH_OUT` (the JSON results file),
//! `BENCH_CHANGES`. Run it through `bash benches/propagation.sh`, as root.

use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_proto::v1::*;
use berth_tests::agent_node::AgentNode;
use berth_tests::bench::{cores, env_usize, float, loadavg, meminfo_kb, pct, stats};
use berth_tests::cluster::{
    DeployApi as Api, Fabric, SchedulerProc, all_ready, httpd_spec, start_nodes, with_http_service,
};
use berth_tests::services::container_netns;
use berth_tests::{poll_until, require_root};
use serde_json::{Value, json};

const IMAGE: &str = "bench-prop-busybox:1";
const NODES: usize = 3;
const SERVICE: &str = "prop";
const CLIENT: &str = "prop-client";
const WAIT: Duration = Duration::from_secs(60);
/// The readiness probe's period.
const PERIOD_MS: u32 = 100;
/// How often a prober tries while waiting for the endpoint (refusals are cheap: an RST from
/// the node's own table).
const FAST: Duration = Duration::from_millis(1);
/// How often a prober tries while waiting for a refusal (each success forks an httpd child).
const SLOW: Duration = Duration::from_millis(10);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
const TARGET_P99_MS: f64 = 500.0;

fn main() {
    require_root();
    let changes = env_usize("BENCH_CHANGES", 100);
    let out_path = berth_tests::bench::out_path("propagation.json");
    let load_start = loadavg();
    let started = Instant::now();

    let sched = SchedulerProc::start(&[]);
    let mut fabric = Fabric::new();
    let nodes = start_nodes(&sched, &mut fabric, NODES, "p", IMAGE);
    let api = Api::new(&sched.endpoint(), WAIT);
    poll_until("every node ready", WAIT, || {
        let listed = api.nodes();
        (listed.len() == NODES && listed.iter().all(|n| n.ready)).then_some(())
    });
    let c = Setup::new(&api, &nodes);
    println!(
        "cluster up in {:.1} s; replica on {}; probers: {}",
        started.elapsed().as_secs_f64(),
        nodes[c.replica_node].name(),
        c.probers
            .iter()
            .map(|p| format!("{} ({})", p.node, p.from))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut samples = Vec::new();
    for i in 0..changes {
        let s = c.change(&nodes);
        if i % 10 == 0 || i + 1 == changes {
            println!(
                "change {i}: reachable on every node {:.1} ms after the probe passed (nodes {:?})",
                s.last_ms, s.connect_ms
            );
        }
        samples.push(s);
    }
    let attempts: Vec<u64> = c.probers.iter().map(|p| p.attempts()).collect();
    let odd_errors: Vec<u64> = c.probers.iter().map(|p| p.odd_errors()).collect();
    let names: Vec<String> = c.probers.iter().map(|p| p.node.clone()).collect();
    let from: Vec<String> = c.probers.iter().map(|p| p.from.clone()).collect();
    let replica_node = nodes[c.replica_node].name().to_string();
    drop(c);
    for name in [SERVICE, CLIENT] {
        api.delete(name);
    }
    let run = Run {
        samples,
        names,
        from,
        replica_node,
        attempts,
        odd_errors,
        load_start,
        load_end: loadavg(),
        total_s: started.elapsed().as_secs_f64(),
    };
    run.print();
    berth_tests::bench::write_results(&out_path, &run.json());
}

/// The deployments, the replica's ready file and the probers.
struct Setup {
    /// Index of the node the replica runs on.
    replica_node: usize,
    container_id: String,
    /// `/proc/PID/root/tmp/ready` of the replica's init.
    ready_file: PathBuf,
    probers: Vec<Prober>,
}

impl Setup {
    fn new(api: &Api, nodes: &[AgentNode]) -> Self {
        api.apply(client_spec());
        let clients = api.wait(CLIENT, "a client on each node", |d| all_ready(d, 3));
        api.apply(service_spec());
        let d = api.wait(SERVICE, "the replica ready", |d| all_ready(d, 1));
        let vip: SocketAddr = format!("{}:80", d.virtual_ip)
            .parse()
            .unwrap_or_else(|e| panic!("virtual IP {:?}: {e}", d.virtual_ip));
        let r = &d.replica_status[0];
        let replica_node = nodes
            .iter()
            .position(|n| n.name() == r.node)
            .expect("the replica's node is one of ours");
        let pid = container_pid(&nodes[replica_node], &r.container_id);
        let probers = nodes
            .iter()
            .map(|n| {
                let client = clients.replica_status.iter().find(|c| c.node == n.name());
                let (netns, from) = match client {
                    Some(c) => (container_netns(n, &c.container_id), "container netns"),
                    None => (n.netns_path(), "node netns"),
                };
                Prober::start(n.name(), from, &netns, vip)
            })
            .collect();
        let s = Self {
            replica_node,
            container_id: r.container_id.clone(),
            ready_file: PathBuf::from(format!("/proc/{pid}/root/tmp/ready")),
            probers,
        };
        assert!(s.ready_file.exists(), "{} missing", s.ready_file.display());
        s.await_all(Mode::WantConnect, "every node reaches the VIP at first");
        s
    }

    /// Arms every prober with `mode` and waits until each saw it; the unix µs of each.
    fn await_all(&self, mode: Mode, what: &str) -> Vec<u64> {
        for p in &self.probers {
            p.arm(mode);
        }
        poll_until(what, WAIT, || {
            self.probers
                .iter()
                .map(Prober::seen)
                .collect::<Option<Vec<u64>>>()
        })
    }

    /// One unready → ready change.
    fn change(&self, nodes: &[AgentNode]) -> Sample {
        let node = &nodes[self.replica_node];
        let removed_us = unix_us();
        fs::remove_file(&self.ready_file)
            .unwrap_or_else(|e| panic!("remove {}: {e}", self.ready_file.display()));
        let refused = self.await_all(Mode::WantRefused, "every node refused");
        let failed_us = self.log_time(node, false, removed_us);

        // Armed before the write: refusals keep coming until the endpoint is everywhere.
        for p in &self.probers {
            p.arm(Mode::WantConnect);
        }
        // The refusals follow the failing probe by a near-constant time: without a pause of
        // varying length the write would always fall at the same point of the probe period.
        let period_us = u64::from(PERIOD_MS) * 1000;
        std::thread::sleep(Duration::from_micros(
            unix_us().wrapping_mul(7919) % period_us,
        ));
        let restored_us = unix_us();
        fs::write(&self.ready_file, b"")
            .unwrap_or_else(|e| panic!("write {}: {e}", self.ready_file.display()));
        let connected = poll_until("every node connects", WAIT, || {
            self.probers
                .iter()
                .map(Prober::seen)
                .collect::<Option<Vec<u64>>>()
        });
        let passed_us = self.log_time(node, true, restored_us);
        let applied_ms = nodes
            .iter()
            .map(|n| since_ms(applied_after(n, passed_us), passed_us))
            .collect();
        let connect_ms: Vec<f64> = connected.iter().map(|&t| since_ms(t, passed_us)).collect();
        Sample {
            restore_to_pass_ms: since_ms(passed_us, restored_us),
            last_ms: connect_ms.iter().copied().fold(f64::MIN, f64::max),
            connect_ms,
            applied_ms,
            unready_ms: since_ms(refused.iter().copied().max().unwrap_or(0), failed_us),
        }
    }

    /// The unix µs of the agent's `readiness changed` line for the replica with `ready`,
    /// the first after `after_us`.
    fn log_time(&self, node: &AgentNode, ready: bool, after_us: u64) -> u64 {
        poll_until("the agent's readiness line", WAIT, || {
            log_lines(node).into_iter().find_map(|v| {
                let f = &v["fields"];
                let ours = f["message"] == "readiness changed"
                    && f["container"] == self.container_id.as_str()
                    && f["ready"] == ready;
                let t = line_us(&v)?;
                (ours && t > after_us).then_some(t)
            })
        })
    }
}

/// The first `applied services` line of `node`'s agent at or after `after_us`.
fn applied_after(node: &AgentNode, after_us: u64) -> u64 {
    poll_until("the agent's applied services line", WAIT, || {
        log_lines(node).into_iter().find_map(|v| {
            let t = line_us(&v)?;
            (v["fields"]["message"] == "applied services" && t >= after_us).then_some(t)
        })
    })
}

/// The agent's JSON log lines (the harness' own `=== berth-test` lines skipped).
fn log_lines(node: &AgentNode) -> Vec<Value> {
    node.log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A JSON log line's `timestamp` (RFC 3339, µs) as unix µs.
fn line_us(v: &Value) -> Option<u64> {
    let t = humantime::parse_rfc3339(v["timestamp"].as_str()?).ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(d.as_micros()).ok()
}

/// The container's init pid, from the shim's `shim.json`.
fn container_pid(node: &AgentNode, id: &str) -> u32 {
    let path = node.container_dir(id).join("shim.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("shim.json is JSON");
    v["container_pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no container_pid in {text}"))
}

/// The service: one httpd replica whose readiness is the file /tmp/ready.
fn service_spec() -> DeploymentSpec {
    let mut spec = with_http_service(httpd_spec(SERVICE, IMAGE, "v1", 1));
    spec.command[2] = format!("touch /tmp/ready && {}", spec.command[2]);
    spec.readiness = Some(Probe {
        check: Some(probe::Check::Exec(ExecCheck {
            command: vec!["test".into(), "-f".into(), "/tmp/ready".into()],
        })),
        period_ms: PERIOD_MS,
        failure_threshold: 1,
        success_threshold: 1,
        ..Default::default()
    });
    spec
}

/// Three sleeping containers, whose netns the probers use (one per node when spread).
fn client_spec() -> DeploymentSpec {
    DeploymentSpec {
        name: CLIENT.into(),
        image: IMAGE.into(),
        command: vec!["sleep".into(), "3600".into()],
        replicas: 3,
        resources: Some(Resources {
            cpu_millis: 100,
            memory_bytes: 32 << 20,
        }),
        ..Default::default()
    }
}

/// What a prober waits for; it goes back to idle once seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Idle = 0,
    WantRefused = 1,
    WantConnect = 2,
    Stop = 3,
}

/// A thread in a netns connecting to the VIP as its [`Mode`] asks.
struct Prober {
    node: String,
    from: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    mode: AtomicU8,
    /// Unix µs at which the awaited outcome's attempt started; 0 while not seen.
    seen_us: AtomicU64,
    attempts: AtomicU64,
    /// Outcomes that are neither a connection nor a refusal (e.g. a timeout).
    odd_errors: AtomicU64,
}

impl Prober {
    fn start(node: &str, from: &str, netns: &Path, vip: SocketAddr) -> Self {
        let ns = fs::File::open(netns)
            .unwrap_or_else(|e| panic!("open the netns {}: {e}", netns.display()));
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        // setns changes only the calling thread's namespace: a thread of its own.
        let thread = std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            probe_loop(&s, vip);
        });
        Self {
            node: node.to_string(),
            from: from.to_string(),
            shared,
            thread: Some(thread),
        }
    }

    fn arm(&self, mode: Mode) {
        self.shared.seen_us.store(0, Ordering::SeqCst);
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn seen(&self) -> Option<u64> {
        Some(self.shared.seen_us.load(Ordering::SeqCst)).filter(|&t| t != 0)
    }

    fn attempts(&self) -> u64 {
        self.shared.attempts.load(Ordering::Relaxed)
    }

    fn odd_errors(&self) -> u64 {
        self.shared.odd_errors.load(Ordering::Relaxed)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.shared.mode.store(Mode::Stop as u8, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn probe_loop(s: &Shared, vip: SocketAddr) {
    loop {
        let mode = s.mode.load(Ordering::SeqCst);
        let (want, pause) = match mode {
            m if m == Mode::WantRefused as u8 => (Mode::WantRefused, SLOW),
            m if m == Mode::WantConnect as u8 => (Mode::WantConnect, FAST),
            m if m == Mode::Stop as u8 => return,
            _ => {
                std::thread::sleep(SLOW);
                continue;
            }
        };
        let at = unix_us();
        s.attempts.fetch_add(1, Ordering::Relaxed);
        let hit = match TcpStream::connect_timeout(&vip, CONNECT_TIMEOUT) {
            Ok(stream) => {
                reset_on_close(&stream);
                want == Mode::WantConnect
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => want == Mode::WantRefused,
            Err(_) => {
                s.odd_errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        // Only the mode this attempt was made for is answered (the main thread may have
        // re-armed meanwhile).
        if hit
            && s.mode
                .compare_exchange(mode, Mode::Idle as u8, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            s.seen_us.store(at, Ordering::SeqCst);
        } else {
            std::thread::sleep(pause);
        }
    }
}

/// SO_LINGER 0: the close sends an RST, so thousands of probes leave no TIME_WAIT sockets.
fn reset_on_close(stream: &TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::Linger, &linger);
}

/// One change's figures, ms.
struct Sample {
    /// The file written → the agent logged the probe passing (the probe period).
    restore_to_pass_ms: f64,
    /// Probe passed → first connect through the VIP, per node.
    connect_ms: Vec<f64>,
    /// The last of [`Self::connect_ms`].
    last_ms: f64,
    /// Probe passed → the node's agent logged `applied services`, per node (after the nft
    /// transaction and the bookkeeping that follows it, so later than the rules work).
    applied_ms: Vec<f64>,
    /// Probe failed (logged) → every node refused (probers at [`SLOW`]).
    unready_ms: f64,
}

struct Run {
    samples: Vec<Sample>,
    names: Vec<String>,
    from: Vec<String>,
    replica_node: String,
    attempts: Vec<u64>,
    odd_errors: Vec<u64>,
    load_start: String,
    load_end: String,
    total_s: f64,
}

impl Run {
    fn col(&self, f: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.samples.iter().map(f).collect()
    }

    fn node_col(&self, i: usize, f: impl Fn(&Sample) -> &Vec<f64>) -> Vec<f64> {
        self.samples.iter().map(|s| f(s)[i]).collect()
    }

    fn print(&self) {
        let last = self.col(|s| s.last_ms);
        let all: Vec<f64> = self
            .samples
            .iter()
            .flat_map(|s| s.connect_ms.clone())
            .collect();
        println!();
        println!(
            "endpoint propagation, real path ({} cores, {} MB RAM; release; {} changes; 1-min load {} at the start, {} at the end)",
            cores(),
            meminfo_kb("MemTotal:") / 1024,
            self.samples.len(),
            self.load_start,
            self.load_end
        );
        println!("{:-<110}", "");
        row(
            "probe passed → reachable on every node, p50 / p99",
            &p50_p99(&last),
            &format!(
                "target p99 < {TARGET_P99_MS:.0} ms: {}",
                if pct(&last, 0.99) < TARGET_P99_MS {
                    "met"
                } else {
                    "MISSED"
                }
            ),
        );
        row(
            "  per node first connect, all nodes pooled",
            &p50_p99(&all),
            &format!("max {:.1} ms", pct(&all, 1.0)),
        );
        for (i, name) in self.names.iter().enumerate() {
            let here = if *name == self.replica_node {
                ", the replica's node"
            } else {
                ""
            };
            row(
                &format!("  node {name}{here}: connect / apply logged"),
                &format!(
                    "{} / {}",
                    p50_p99(&self.node_col(i, |s| &s.connect_ms)),
                    p50_p99(&self.node_col(i, |s| &s.applied_ms))
                ),
                &format!("prober in the {}", self.from[i]),
            );
        }
        row(
            "file written → probe passed (probe period, apart)",
            &p50_p99(&self.col(|s| s.restore_to_pass_ms)),
            &format!("exec probe every {PERIOD_MS} ms, thresholds 1"),
        );
        row(
            "probe failed → refused on every node",
            &p50_p99(&self.col(|s| s.unready_ms)),
            &format!(
                "probers every {} ms here, so up to that late",
                SLOW.as_millis()
            ),
        );
        println!("{:-<110}", "");
        println!(
            "times from the agents' JSON log timestamps and the probers' clock (one machine); probers retry every {} ms + connect while waiting; {} attempts, {:?} neither connected nor refused; p50 / p99 in ms, nearest rank; bench took {:.0} s",
            FAST.as_millis(),
            self.attempts.iter().sum::<u64>(),
            self.odd_errors,
            self.total_s
        );
    }

    fn json(&self) -> Value {
        let per_node: Vec<Value> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                json!({
                    "node": name,
                    "replica_here": *name == self.replica_node,
                    "prober_in": self.from[i],
                    "connect_ms": stats(&self.node_col(i, |s| &s.connect_ms)),
                    "applied_services_ms": stats(&self.node_col(i, |s| &s.applied_ms)),
                    "attempts": self.attempts[i],
                    "odd_errors": self.odd_errors[i],
                })
            })
            .collect();
        let all: Vec<f64> = self
            .samples
            .iter()
            .flat_map(|s| s.connect_ms.clone())
            .collect();
        json!({
            "host": { "cores": cores(), "mem_total_kb": meminfo_kb("MemTotal:") },
            "loadavg_1m_start": self.load_start,
            "loadavg_1m_end": self.load_end,
            "changes": self.samples.len(),
            "probe_period_ms": PERIOD_MS,
            "prober_retry_ms": float(u64::try_from(FAST.as_millis()).unwrap_or(0)),
            "passed_to_every_node_ms": stats(&self.col(|s| s.last_ms)),
            "passed_to_node_pooled_ms": stats(&all),
            "per_node": per_node,
            "restore_to_passed_ms": stats(&self.col(|s| s.restore_to_pass_ms)),
            "failed_to_refused_everywhere_ms": stats(&self.col(|s| s.unready_ms)),
            "target_p99_ms": TARGET_P99_MS,
            "samples": self.samples.iter().map(|s| json!({
                "connect_ms": s.connect_ms,
                "applied_ms": s.applied_ms,
                "restore_to_pass_ms": s.restore_to_pass_ms,
                "unready_ms": s.unready_ms,
            })).collect::<Vec<_>>(),
            "total_s": self.total_s,
        })
    }
}

fn p50_p99(v: &[f64]) -> String {
    format!("{:.1} / {:.1} ms", pct(v, 0.5), pct(v, 0.99))
}

/// `to_us − from_us` in ms (negative when `to` came first).
fn since_ms(to_us: u64, from_us: u64) -> f64 {
    (float(to_us) - float(from_us)) / 1000.0
}

fn unix_us() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(d.as_micros()).expect("µs since 1970 fit u64")
}

fn row(what: &str, value: &str, note: &str) {
    println!("{what:<58} {value:>22}  {note}");
}
