//! Release benchmark of the service load balancer and node DNS (issue 14's Speed list),
//! in-process against the real kernel: the agent's own node network, services table and DNS
//! server in two node netns that this program makes and removes. Run by benches/services.sh.
//!
//! Measures, in alternating rounds (pod IP and VIP take turns, so drift falls on both):
//! added latency of the VIP (Rust client and `ab`, new connection and keep-alive), throughput,
//! lookup cost at each size against an iptables-style linear chain, LB update time, endpoint
//! propagation to both nodes, and DNS query latency. Env: BENCH_ROUNDS (5),
//! BENCH_REQUESTS (2000), BENCH_SIZES (10,1000,5000), BENCH_CHANGES (100),
//! BENCH_QUERIES (5000), BENCH_OUT (a JSON copy of the table).

#[path = "../../tests/common/mod.rs"]
mod common;
mod dns;
mod fabric;
mod linear;
mod report;
mod sections;
mod traffic;

use anyhow::Context;

use report::Report;

/// The knobs, from the environment.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) rounds: usize,
    pub(crate) requests: usize,
    pub(crate) sizes: Vec<usize>,
    pub(crate) changes: usize,
    pub(crate) queries: usize,
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?}: not a count")),
        Err(_) => Ok(default),
    }
}

fn config() -> anyhow::Result<Config> {
    let sizes = std::env::var("BENCH_SIZES").unwrap_or_else(|_| "10,1000,5000".into());
    let sizes = sizes
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .with_context(|| format!("BENCH_SIZES: {s:?} is not a service count >= 1"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Config {
        rounds: env_usize("BENCH_ROUNDS", 5)?.max(1),
        requests: env_usize("BENCH_REQUESTS", 2000)?.max(10),
        sizes,
        changes: env_usize("BENCH_CHANGES", 100)?.max(1),
        queries: env_usize("BENCH_QUERIES", 5000)?.max(10),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cfg = config()?;
    anyhow::ensure!(nix::unistd::Uid::effective().is_root(), "run as root");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Interrupted, the run's future is dropped with the fabric in it: its netns, tables and
    // mounts are removed as on a normal end.
    tokio::select! {
        done = run(&cfg) => done,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    }
}

async fn run(cfg: &Config) -> anyhow::Result<()> {
    let mut report = Report::new(loadavg());
    let f = fabric::Fabric::new().await?;
    let mut generation = 1;
    f.apply(&fabric::set_of(generation, 1, &[f.b0.ip], &[f.b0.ip]))
        .await?;
    eprintln!("latency and throughput ({} rounds)...", cfg.rounds);
    sections::latency(&f, cfg, &mut report)?;
    sections::cross_node(&f, cfg, &mut report)?;
    eprintln!("lookup cost at {:?} services...", cfg.sizes);
    sections::lookup(&f, cfg, &mut generation, &mut report).await?;
    eprintln!("LB update time...");
    sections::updates(&f, cfg, &mut generation, &mut report).await?;
    eprintln!("endpoint propagation ({} changes)...", cfg.changes);
    sections::propagation(&f, cfg, &mut generation, &mut report).await?;
    eprintln!("DNS...");
    let (server, stop) = dns::serve(&f).await?;
    let (idle, loaded) = dns::latency(&f, server, cfg.queries, 2)?;
    let _ = stop.send(());
    report.dns(&idle, &loaded, cfg.queries);
    report.finish(loadavg());
    report.print();
    if let Ok(path) = std::env::var("BENCH_OUT") {
        report.write_json(&path)?;
    }
    Ok(())
}
