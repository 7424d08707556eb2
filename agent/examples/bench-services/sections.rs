//! The measured parts: VIP vs pod IP (latency, throughput), lookup cost as the table grows
//! (verdict map vs a linear chain), LB update time, and endpoint propagation to both nodes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use berth_agent::net::ServicesOutcome;

use crate::Config;
use crate::common::in_netns;
use crate::fabric::{BULK, Fabric, HTTP, VIP, set_of};
use crate::linear;
use crate::report::{Report, median, p50_p99};
use crate::traffic::{self, AbRun, KeptAlive};

/// `n` requests over new connections to `to` from the netns at `ns`: µs each.
fn new_conns(ns: &Path, to: SocketAddr, n: usize) -> anyhow::Result<Vec<f64>> {
    in_netns(ns, || {
        (0..n)
            .map(|_| traffic::request_new_conn(to).map(|(_, d)| d.as_secs_f64() * 1e6))
            .collect()
    })
}

/// `n` requests on one kept-alive connection: µs each.
fn kept(ns: &Path, to: SocketAddr, n: usize) -> anyhow::Result<Vec<f64>> {
    in_netns(ns, || {
        let mut conn = KeptAlive::open(to)?;
        (0..n)
            .map(|_| conn.request().map(|d| d.as_secs_f64() * 1e6))
            .collect()
    })
}

/// Per target (pod IP, VIP): what the rounds gathered.
#[derive(Default)]
struct Gathered {
    new_conn: Vec<f64>,
    kept: Vec<f64>,
    ab_close: Vec<AbRun>,
    ab_keep: Vec<AbRun>,
    ab_conc: Vec<AbRun>,
    bulk: Vec<f64>,
}

/// Pod IP vs VIP from client A's netns, in alternating rounds (the endpoint b0 is on node
/// A, so the only difference is the VIP's DNAT).
pub(crate) fn latency(f: &Fabric, cfg: &Config, report: &mut Report) -> anyhow::Result<()> {
    let ns = f.client_a.netns.as_path();
    let targets = [
        (
            "pod IP",
            SocketAddr::from((f.b0.ip, HTTP.1)),
            SocketAddr::from((f.b0.ip, BULK.1)),
        ),
        (
            "VIP",
            SocketAddr::from((VIP, HTTP.0)),
            SocketAddr::from((VIP, BULK.0)),
        ),
    ];
    let mut got = [Gathered::default(), Gathered::default()];
    for round in 0..cfg.rounds {
        for t in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (_, http, bulk) = targets[t];
            let g = &mut got[t];
            g.new_conn.extend(new_conns(ns, http, cfg.requests)?);
            g.kept.extend(kept(ns, http, cfg.requests)?);
            g.ab_close
                .push(traffic::ab(ns, http, cfg.requests, 1, false)?);
            g.ab_keep
                .push(traffic::ab(ns, http, cfg.requests * 4, 1, true)?);
            g.ab_conc
                .push(traffic::ab(ns, http, cfg.requests * 4, 4, true)?);
            g.bulk
                .push(in_netns(ns, || traffic::bulk_read(bulk))? * 8.0 / 1e9);
        }
    }
    let [pod, vip] = &mut got;
    let s = "VIP vs pod IP (endpoint on the client's node)";
    let n = cfg.requests * cfg.rounds;
    report.added(
        s,
        &format!("Rust client, new connection per request (n={n} each)"),
        ("pod", p50_p99(&mut pod.new_conn)),
        ("VIP", p50_p99(&mut vip.new_conn)),
    );
    report.added(
        s,
        &format!("Rust client, kept-alive connection (n={n} each)"),
        ("pod", p50_p99(&mut pod.kept)),
        ("VIP", p50_p99(&mut vip.kept)),
    );
    let ab_pcts = |runs: &[AbRun]| {
        (
            median(runs.iter().map(|r| r.p50_us).collect()),
            median(runs.iter().map(|r| r.p99_us).collect()),
        )
    };
    report.added(
        s,
        "ab -c 1, new connection per request (median of rounds)",
        ("pod", ab_pcts(&pod.ab_close)),
        ("VIP", ab_pcts(&vip.ab_close)),
    );
    report.added(
        s,
        "ab -k -c 1, keep-alive (median of rounds)",
        ("pod", ab_pcts(&pod.ab_keep)),
        ("VIP", ab_pcts(&vip.ab_keep)),
    );
    let rps = |runs: &[AbRun]| median(runs.iter().map(|r| r.rps).collect());
    report.rate(
        s,
        "throughput: ab -c 1, new connection per request",
        "req/s",
        ("pod", rps(&pod.ab_close)),
        ("VIP", rps(&vip.ab_close)),
    );
    report.rate(
        s,
        "throughput: ab -k -c 4, keep-alive",
        "req/s",
        ("pod", rps(&pod.ab_conc)),
        ("VIP", rps(&vip.ab_conc)),
    );
    report.rate(
        s,
        &format!(
            "throughput: one TCP stream of {} MiB",
            crate::fabric::BULK_BYTES >> 20
        ),
        "Gbit/s",
        ("pod", median(pod.bulk.clone())),
        ("VIP", median(vip.bulk.clone())),
    );
    Ok(())
}

/// At each size: new-connection latency to the pod IP and through the verdict map; then,
/// with a linear chain of as many rules loaded beside it, to the pod IP and through the
/// chain's last rule.
pub(crate) async fn lookup(
    f: &Fabric,
    cfg: &Config,
    generation: &mut u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let ns = f.client_a.netns.as_path();
    let pod = SocketAddr::from((f.b0.ip, HTTP.1));
    let n = cfg.requests / 2;
    for &size in &cfg.sizes {
        *generation += 1;
        f.apply(&set_of(*generation, size, &[f.b0.ip], &[f.b0.ip]))
            .await?;
        let map = alternate(ns, cfg.rounds, n, pod, SocketAddr::from((VIP, HTTP.0)))?;
        linear::load(&f.a.ns_name, size, f.b0.ip)?;
        let lin = alternate(ns, cfg.rounds, n, pod, SocketAddr::from((linear::VIP, 80)));
        linear::remove(&f.a.ns_name)?;
        let lin = lin?;
        let s = "Lookup cost: new connection, p50/p99 µs";
        let what = format!("{size} services (n={} each)", n * cfg.rounds);
        report.added(
            s,
            &format!("{what}: berth verdict map"),
            ("pod", map.0),
            ("VIP", map.1),
        );
        report.added(
            s,
            &format!("{what}: linear chain of {size} DNAT rules, target last"),
            ("pod", lin.0),
            ("VIP", lin.1),
        );
    }
    Ok(())
}

/// p50/p99 of new-connection requests to `a` and to `b`, taking turns over `rounds`.
fn alternate(
    ns: &Path,
    rounds: usize,
    n: usize,
    a: SocketAddr,
    b: SocketAddr,
) -> anyhow::Result<((f64, f64), (f64, f64))> {
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            sa.extend(new_conns(ns, a, n)?);
            sb.extend(new_conns(ns, b, n)?);
        } else {
            sb.extend(new_conns(ns, b, n)?);
            sa.extend(new_conns(ns, a, n)?);
        }
    }
    Ok((p50_p99(&mut sa), p50_p99(&mut sb)))
}

/// At each size, on node A: a whole-table build (the first set after the table is
/// removed), the DNS zone rebuild, and an incremental update (one service's endpoint moves).
pub(crate) async fn updates(
    f: &Fabric,
    cfg: &Config,
    generation: &mut u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (b0, r0) = (f.b0.ip, f.r0.ip);
    for &size in &cfg.sizes {
        let mut two = whole_two_endpoints(f, size, cfg.rounds.min(2), generation).await?;
        let (mut full, mut zone, mut incr, mut removed) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..cfg.rounds {
            let began = Instant::now();
            f.net_a.remove_services().await?;
            removed.push(began.elapsed().as_secs_f64() * 1e3);
            *generation += 1;
            let set = set_of(*generation, size, &[b0], &[b0]);
            // A fresh server: an unchanged set would keep its zone (endpoint-only changes do).
            let dns = berth_agent::dns::Dns::new(&[])?;
            let began = Instant::now();
            dns.update(&set)?;
            zone.push(began.elapsed().as_secs_f64() * 1e3);
            let began = Instant::now();
            let outcome = f.net_a.apply_services(&set).await?;
            full.push(began.elapsed().as_secs_f64() * 1e3);
            ensure!(
                matches!(outcome, ServicesOutcome::Applied { rebuilt: true, .. }),
                "{outcome:?}"
            );
        }
        for i in 0..20 {
            *generation += 1;
            let ep = if i % 2 == 0 { r0 } else { b0 };
            let set = set_of(*generation, size, &[ep], &[b0]);
            let began = Instant::now();
            let outcome = f.net_a.apply_services(&set).await?;
            incr.push(began.elapsed().as_secs_f64() * 1e3);
            ensure!(
                matches!(outcome, ServicesOutcome::Applied { rebuilt: false, .. }),
                "{outcome:?}"
            );
        }
        let s = "LB update (apply a ServiceSet on one node)";
        report.spread(
            s,
            &format!("{size} services: whole table built"),
            "ms",
            p50_p99(&mut full),
            full.len(),
        );
        report.spread(
            s,
            &format!("{size} services, 2 endpoints each (a numgen vmap each): whole table built"),
            "ms",
            p50_p99(&mut two),
            two.len(),
        );
        report.spread(
            s,
            &format!("{size} services: one endpoint changed (incremental)"),
            "ms",
            p50_p99(&mut incr),
            incr.len(),
        );
        report.spread(
            s,
            &format!("{size} services: DNS zone built (names or VIPs changed)"),
            "ms",
            p50_p99(&mut zone),
            zone.len(),
        );
        report.spread(
            s,
            &format!("{size} services: table removed (teardown, with conntrack flush)"),
            "ms",
            p50_p99(&mut removed),
            removed.len(),
        );
    }
    Ok(())
}

/// Whole-table builds on node A at `size` whose fillers have two endpoints each, so every
/// service port's chain picks with `numgen random mod 2` (an anonymous map in the kernel).
async fn whole_two_endpoints(
    f: &Fabric,
    size: usize,
    rounds: usize,
    generation: &mut u64,
) -> anyhow::Result<Vec<f64>> {
    let mut took = Vec::new();
    for _ in 0..rounds {
        f.net_a.remove_services().await?;
        *generation += 1;
        let set = set_of(*generation, size, &[f.b0.ip], &[f.b0.ip, f.r0.ip]);
        let began = Instant::now();
        f.net_a.apply_services(&set).await?;
        took.push(began.elapsed().as_secs_f64() * 1e3);
    }
    Ok(took)
}

/// With the largest size programmed on both nodes, `changes` times: web's one endpoint moves
/// between b0 (node A) and r0 (node B); time from the set handed to both agents' apply
/// (what a replica turning Ready leads to) until a client on each node gets the new endpoint.
pub(crate) async fn propagation(
    f: &Fabric,
    cfg: &Config,
    generation: &mut u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let size = cfg.sizes.iter().copied().max().unwrap_or(1);
    let b0 = f.b0.ip;
    *generation += 1;
    f.apply(&set_of(*generation, size, &[b0], &[b0])).await?;
    let (mut reach, mut applied) = (Vec::new(), Vec::new());
    for i in 0..cfg.changes {
        let (ep, tag) = if i % 2 == 0 {
            (f.r0.ip, "r0")
        } else {
            (b0, "b0")
        };
        *generation += 1;
        let set = set_of(*generation, size, &[ep], &[b0]);
        let began = Instant::now();
        f.apply(&set).await?;
        applied.push(began.elapsed().as_secs_f64() * 1e3);
        for client in [&f.client_a, &f.client_b] {
            until_answered(&client.netns, tag)?;
        }
        reach.push(began.elapsed().as_secs_f64() * 1e3);
    }
    let s = "Endpoint propagation (2 nodes, endpoint moves between nodes)";
    let what = format!(
        "{size} services: set applied on both nodes -> new endpoint answers via VIP on both"
    );
    report.spread(s, &what, "ms", p50_p99(&mut reach), reach.len());
    report.spread(
        s,
        &format!("{size} services: of which both agents' apply (DNS + nft)"),
        "ms",
        p50_p99(&mut applied),
        applied.len(),
    );
    Ok(())
}

/// Calls the VIP from the netns at `ns` until endpoint `tag` answers (bounded: 2,000 calls).
fn until_answered(ns: &Path, tag: &str) -> anyhow::Result<()> {
    in_netns(ns, || {
        for _ in 0..2000 {
            let (body, _) = traffic::request_new_conn(SocketAddr::from((VIP, HTTP.0)))
                .context("calling the VIP")?;
            if body == tag {
                return Ok(());
            }
        }
        bail!("{tag} never answered through {VIP}");
    })
}

/// Pod IP vs VIP from client B's netns to endpoint b0 on node A: both paths are routed
/// (node B, the link, node A), so the difference is the VIP's DNAT alone, with no same-node
/// masquerade and no L2 shortcut on the pod IP side.
pub(crate) fn cross_node(f: &Fabric, cfg: &Config, report: &mut Report) -> anyhow::Result<()> {
    let ns = f.client_b.netns.as_path();
    let targets = [
        (
            SocketAddr::from((f.b0.ip, HTTP.1)),
            SocketAddr::from((f.b0.ip, BULK.1)),
        ),
        (
            SocketAddr::from((VIP, HTTP.0)),
            SocketAddr::from((VIP, BULK.0)),
        ),
    ];
    let mut got = [Gathered::default(), Gathered::default()];
    for round in 0..cfg.rounds {
        for t in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (http, bulk) = targets[t];
            let g = &mut got[t];
            g.new_conn.extend(new_conns(ns, http, cfg.requests)?);
            g.ab_conc
                .push(traffic::ab(ns, http, cfg.requests * 4, 4, true)?);
            g.bulk
                .push(in_netns(ns, || traffic::bulk_read(bulk))? * 8.0 / 1e9);
        }
    }
    let [pod, vip] = &mut got;
    let s = "VIP vs pod IP (client on node B, endpoint on node A)";
    report.added(
        s,
        &format!(
            "Rust client, new connection per request (n={} each)",
            cfg.requests * cfg.rounds
        ),
        ("pod", p50_p99(&mut pod.new_conn)),
        ("VIP", p50_p99(&mut vip.new_conn)),
    );
    let rps = |runs: &[AbRun]| median(runs.iter().map(|r| r.rps).collect());
    report.rate(
        s,
        "throughput: ab -k -c 4, keep-alive",
        "req/s",
        ("pod", rps(&pod.ab_conc)),
        ("VIP", rps(&vip.ab_conc)),
    );
    report.rate(
        s,
        "throughput: one TCP stream",
        "Gbit/s",
        ("pod", median(pod.bulk.clone())),
        ("VIP", median(vip.bulk.clone())),
    );
    Ok(())
}
