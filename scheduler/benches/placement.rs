//! Placement throughput: `cargo bench -p berth-scheduler --bench placement`.
//!
//! Builds simulated clusters (varied capacity, some nodes not ready, zone labels a/b/c), places
//! replicas of many deployments with mixed strategies, sizes, node selectors and host ports via
//! `place_many`, and prints the median placements per second over several rounds. Only
//! replicas given a node count as placements; the unschedulable ones are reported apart (their
//! time is in the total: a scheduler pays for deciding that nothing fits), with the rate of
//! every decision beside. Every round must give the same placements.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use berth_proto::v1::{PortMapping, Protocol, Resources, Strategy};
use berth_scheduler::placement::{NodeView, Placement, Request, place_many};

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        let len = u64::try_from(items.len()).expect("a slice length fits u64");
        items[usize::try_from(self.next() % len).expect("an index below a slice length fits usize")]
    }
}

fn nodes(count: usize, seed: u64) -> Vec<NodeView> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|i| {
            let mut n = NodeView::new(
                format!("node-{i:05}"),
                Resources {
                    cpu_millis: rng.pick(&[4_000, 8_000, 16_000, 32_000]),
                    memory_bytes: rng.pick(&[8, 16, 32, 64]) * GI,
                },
            );
            // About 5% not ready.
            n.ready = rng.next() % 20 >= 1;
            n.labels
                .insert("zone".into(), ["a", "b", "c"][i % 3].into());
            if rng.next() % 4 < 1 {
                n.labels.insert("disk".into(), "ssd".into());
            }
            // Some load already there.
            n.allocated = Resources {
                cpu_millis: n.allocatable.cpu_millis / 8 * (rng.next() % 3),
                memory_bytes: n.allocatable.memory_bytes / 8 * (rng.next() % 3),
            };
            n
        })
        .collect()
}

struct Deployment {
    name: String,
    resources: Resources,
    ports: Vec<PortMapping>,
    selector: BTreeMap<String, String>,
    strategy: Strategy,
    replicas: usize,
}

fn deployments(count: usize, replicas: usize, seed: u64) -> Vec<Deployment> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|d| {
            let mut selector = BTreeMap::new();
            match rng.next() % 10 {
                0 | 1 => {
                    selector.insert("zone".into(), rng.pick(&["a", "b", "c"]).into());
                }
                2 => {
                    selector.insert("disk".into(), "ssd".into());
                }
                _ => {}
            }
            let ports = if rng.next() % 10 < 1 {
                vec![PortMapping {
                    host_port: 30_000 + u32::try_from(d).expect("a deployment index fits u32"),
                    container_port: 8080,
                    protocol: Protocol::Tcp as i32,
                }]
            } else {
                Vec::new()
            };
            Deployment {
                name: format!("deploy-{d:04}"),
                resources: Resources {
                    cpu_millis: rng.pick(&[0, 50, 100, 250, 500, 1_000, 2_000]),
                    memory_bytes: rng.pick(&[64, 128, 256, 512, 1024, 2048]) * MI,
                },
                ports,
                selector,
                strategy: if rng.next() % 2 < 1 {
                    Strategy::Spread
                } else {
                    Strategy::Binpack
                },
                replicas,
            }
        })
        .collect()
}

struct Round {
    elapsed: Duration,
    placements: Vec<Placement>,
}

fn round(template: &[NodeView], deps: &[Deployment]) -> Round {
    let mut cluster = template.to_vec();
    let mut placements = Vec::new();
    let start = Instant::now();
    for d in deps {
        let req = Request {
            deployment: &d.name,
            resources: d.resources,
            ports: &d.ports,
            node_selector: &d.selector,
            strategy: d.strategy,
            volume_node: None,
            binds: &[],
        };
        placements.extend(place_many(black_box(&mut cluster), &req, d.replicas));
    }
    let elapsed = start.elapsed();
    Round {
        elapsed,
        placements,
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "replica counts in a printed rate are far below 2^52"
)]
fn scenario(nodes_count: usize, deploys: usize, replicas_each: usize, rounds: usize) {
    let template = nodes(nodes_count, 1);
    let deps = deployments(deploys, replicas_each, 2);
    let total = deploys * replicas_each;
    let mut elapsed = Vec::with_capacity(rounds);
    let mut first: Option<Vec<Placement>> = None;
    for _ in 0..rounds {
        let r = round(&template, &deps);
        elapsed.push(r.elapsed.as_secs_f64());
        match &first {
            None => first = Some(r.placements),
            Some(f) => assert!(*f == r.placements, "placements differ between rounds"),
        }
    }
    let placements = first.unwrap_or_default();
    assert_eq!(placements.len(), total, "one decision per replica");
    let unschedulable = placements
        .iter()
        .filter(|p| matches!(p, Placement::Unschedulable { .. }))
        .count();
    let placed = total - unschedulable;
    elapsed.sort_by(f64::total_cmp);
    let (fastest, median, slowest) = (elapsed[0], elapsed[rounds / 2], elapsed[rounds - 1]);
    // Placements per second count only the replicas given a node.
    let rate = |secs: f64| placed as f64 / secs;
    println!(
        "placement: {placed} of {total} replicas placed ({deploys} deployments x {replicas_each}) \
         over {nodes_count} nodes: {:.0} placements/s median of {rounds} rounds \
         (min {:.0}, max {:.0}, {:.2} us/placement); {unschedulable} unschedulable, apart \
         ({:.0} decisions/s counting them); deterministic across rounds",
        rate(median),
        rate(slowest),
        rate(fastest),
        1e6 * median / placed.max(1) as f64,
        total as f64 / median,
    );
    if let Some(reason) = placements.iter().find_map(|p| match p {
        Placement::Unschedulable { reason } => Some(reason),
        Placement::Node(_) => None,
    }) {
        println!("  e.g. {reason}");
    }
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        scenario(100, 10, 10, 1);
        return;
    }
    scenario(1_000, 100, 100, 9);
    scenario(5_000, 1_000, 100, 3);
}
