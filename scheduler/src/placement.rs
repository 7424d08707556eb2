//! Replica placement: filter the nodes, then score the ones left, as kube-scheduler does.
//!
//! Pure and deterministic: no clock, no randomness, no I/O. Equal inputs give equal outputs,
//! and the chosen node does not depend on the order of `nodes` (ties are broken by node name,
//! so names must be unique).
//!
//! A replica that uses a named volume whose data is on a node already (`volume_node`) is
//! pinned: only that node is considered, and when it does not fit the reason names it,
//! `volume data on node n1 (NotReady)` (or the filter it fails), since the replica must wait
//! for its data rather than start empty elsewhere.
//!
//! Filters, applied in this fixed order (a node that fails is counted under the first one):
//! 1. the node is Ready;
//! 2. every `node_selector` label is on the node with the same value;
//! 3. every bind source is at or under one of the node's `--allow-bind` paths;
//! 4. every published host port (`host_port != 0`) is free on the node for its protocol;
//! 5. the cpu request fits (`allocatable - allocated >= request`);
//! 6. the memory request fits.
//!
//! Scores, over the nodes that pass:
//! - [`Strategy::Spread`]: fewest replicas of the same deployment first (a penalty no amount of
//!   free capacity outweighs), then least allocated: the lowest mean of the cpu and memory
//!   fractions that would be allocated once the replica is placed.
//! - [`Strategy::Binpack`]: most allocated: the highest mean of those same fractions.
//!
//! Then the lowest node name. A resource with zero allocatable counts as fully allocated.
//!
//! Cost: one linear scan of the eligible nodes per replica, with integer and float arithmetic
//! and no allocation; label maps and replica counts are read once per [`place_many`] batch.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use berth_proto::v1::{PortMapping, Resources, Strategy};

/// What placement needs to know about one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeView {
    /// Unique in the cluster; the final tie-breaker.
    pub name: String,
    /// Heartbeating and not cordoned; a node that is not ready gets nothing.
    pub ready: bool,
    /// Matched against a request's `node_selector`.
    pub labels: BTreeMap<String, String>,
    /// What the node offers to containers.
    pub allocatable: Resources,
    /// What containers placed on it have requested already.
    pub allocated: Resources,
    /// Host ports in use, as `(port, protocol)` with `protocol` a [`berth_proto::v1::Protocol`].
    pub host_ports: BTreeSet<(u32, i32)>,
    /// Replicas already on the node, per deployment name.
    pub replicas_by_deployment: BTreeMap<String, u32>,
    /// The node's `--allow-bind` paths (canonical): bind sources must be at or under one.
    pub allowed_bind_paths: Vec<String>,
}

impl NodeView {
    /// A ready node with nothing on it.
    pub fn new(name: impl Into<String>, allocatable: Resources) -> Self {
        NodeView {
            name: name.into(),
            ready: true,
            allocatable,
            ..NodeView::default()
        }
    }

    /// Records one replica of `req` on this node: its resources, its host ports and its
    /// deployment's replica count. [`place_many`] calls this after each placement.
    pub fn reserve(&mut self, req: &Request<'_>) {
        self.allocated.cpu_millis = self
            .allocated
            .cpu_millis
            .saturating_add(req.resources.cpu_millis);
        self.allocated.memory_bytes = self
            .allocated
            .memory_bytes
            .saturating_add(req.resources.memory_bytes);
        for p in req.ports.iter().filter(|p| p.host_port != 0) {
            self.host_ports.insert((p.host_port, p.protocol));
        }
        match self.replicas_by_deployment.get_mut(req.deployment) {
            Some(n) => *n = n.saturating_add(1),
            None => {
                self.replicas_by_deployment
                    .insert(req.deployment.to_owned(), 1);
            }
        }
    }
}

/// One replica to place.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The deployment it belongs to, for spreading.
    pub deployment: &'a str,
    /// What one replica requests; zero is allowed and fits everywhere.
    pub resources: Resources,
    /// Its published ports; `host_port == 0` publishes nothing and never conflicts.
    pub ports: &'a [PortMapping],
    /// Labels a node must carry, all of them, with these values.
    pub node_selector: &'a BTreeMap<String, String>,
    /// How to score the nodes that fit.
    pub strategy: Strategy,
    /// The node holding the data of the named volumes the replica uses, once one holds it:
    /// no other node may take the replica.
    pub volume_node: Option<&'a str>,
    /// Host paths it bind-mounts (clean, absolute): only nodes that allow them all fit.
    pub binds: &'a [String],
}

/// Where one replica goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// An index into the `nodes` slice given to [`place`] or [`place_many`].
    Node(usize),
    /// No node passes the filters. `reason` reads like kube's FailedScheduling message:
    /// `0/5 nodes are available: 2 not ready, 2 insufficient memory, 1 node selector mismatch`.
    Unschedulable { reason: String },
}

impl Placement {
    /// The chosen node's index, if any.
    pub fn node(&self) -> Option<usize> {
        match self {
            Placement::Node(i) => Some(*i),
            Placement::Unschedulable { .. } => None,
        }
    }
}

/// Chooses a node for one replica of `req`: filter, then score; ties broken by node name.
pub fn place(nodes: &[NodeView], req: &Request<'_>) -> Placement {
    let slots = prepare(nodes, req);
    match select(nodes, &slots, req) {
        Some(pos) => Placement::Node(slots[pos].index),
        None => Placement::Unschedulable {
            reason: explain(nodes, req),
        },
    }
}

/// Places `count` replicas of `req` one after another, [reserving](NodeView::reserve) each on
/// its node before placing the next, so a batch spreads (or packs) as the replicas would one by
/// one. Returns one [`Placement`] per replica; once one is unschedulable, so are the rest, with
/// the same reason.
pub fn place_many(nodes: &mut [NodeView], req: &Request<'_>, count: usize) -> Vec<Placement> {
    let mut out = Vec::with_capacity(count);
    if count == 0 {
        return out;
    }
    let mut slots = prepare(nodes, req);
    while out.len() < count {
        match select(nodes, &slots, req) {
            Some(pos) => {
                let slot = &mut slots[pos];
                slot.used[0] = slot.used[0].saturating_add(req.resources.cpu_millis);
                slot.used[1] = slot.used[1].saturating_add(req.resources.memory_bytes);
                slot.replicas = slot.replicas.saturating_add(1);
                nodes[slot.index].reserve(req);
                out.push(Placement::Node(slot.index));
            }
            None => {
                let reason = explain(nodes, req);
                out.resize(count, Placement::Unschedulable { reason });
            }
        }
    }
    out
}

/// The filters, in the order a failing node is classified by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    NotReady = 0,
    NodeSelector = 1,
    Binds = 2,
    HostPort = 3,
    Cpu = 4,
    Memory = 5,
}

impl Filter {
    const ALL: [Filter; 6] = [
        Filter::NotReady,
        Filter::NodeSelector,
        Filter::Binds,
        Filter::HostPort,
        Filter::Cpu,
        Filter::Memory,
    ];

    fn label(self) -> &'static str {
        match self {
            Filter::NotReady => "not ready",
            Filter::NodeSelector => "node selector mismatch",
            Filter::Binds => "bind path not allowed",
            Filter::HostPort => "host port conflict",
            Filter::Cpu => "insufficient cpu",
            Filter::Memory => "insufficient memory",
        }
    }
}

/// A node that passed the filters that cannot change within a batch (ready, node selector),
/// with copies of what the per-replica scan reads, kept compact for the cache.
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: usize,
    replicas: u32,
    /// Allocatable cpu, memory.
    cap: [u64; 2],
    /// Allocated cpu, memory.
    used: [u64; 2],
    /// `cap` as floats, 1.0 where zero (then `full` is 1.0 and the fraction is taken as 1.0).
    cap_f: [f64; 2],
    /// 1.0 where `cap` is zero, else 0.0.
    full: [f64; 2],
}

fn selector_matches(node: &NodeView, selector: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(k, v)| node.labels.get(k).is_some_and(|have| have == v))
}

fn binds_allowed(node: &NodeView, binds: &[String]) -> bool {
    binds
        .iter()
        .all(|b| crate::spec::mounts::bind_allowed(b, &node.allowed_bind_paths))
}

/// Whether `node` may hold the replica's volume data: any node until one holds it.
fn volume_ok(node: &NodeView, req: &Request<'_>) -> bool {
    req.volume_node.is_none_or(|v| v == node.name)
}

fn ports_free(node: &NodeView, ports: &[PortMapping]) -> bool {
    ports
        .iter()
        .all(|p| p.host_port == 0 || !node.host_ports.contains(&(p.host_port, p.protocol)))
}

fn fits(free: u64, need: u64) -> bool {
    free >= need
}

/// The first filter `node` fails for `req`, if any.
fn first_failure(node: &NodeView, req: &Request<'_>) -> Option<Filter> {
    if !node.ready {
        Some(Filter::NotReady)
    } else if !selector_matches(node, req.node_selector) {
        Some(Filter::NodeSelector)
    } else if !binds_allowed(node, req.binds) {
        Some(Filter::Binds)
    } else if !ports_free(node, req.ports) {
        Some(Filter::HostPort)
    } else if !fits(
        node.allocatable
            .cpu_millis
            .saturating_sub(node.allocated.cpu_millis),
        req.resources.cpu_millis,
    ) {
        Some(Filter::Cpu)
    } else if !fits(
        node.allocatable
            .memory_bytes
            .saturating_sub(node.allocated.memory_bytes),
        req.resources.memory_bytes,
    ) {
        Some(Filter::Memory)
    } else {
        None
    }
}

fn prepare(nodes: &[NodeView], req: &Request<'_>) -> Vec<Slot> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.ready
                && volume_ok(n, req)
                && selector_matches(n, req.node_selector)
                && binds_allowed(n, req.binds)
        })
        .map(|(index, n)| Slot {
            index,
            replicas: n
                .replicas_by_deployment
                .get(req.deployment)
                .copied()
                .unwrap_or(0),
            cap: [n.allocatable.cpu_millis, n.allocatable.memory_bytes],
            // Where the capacity is zero only a zero request fits, however much is allocated.
            used: [
                used_slot(n.allocatable.cpu_millis, n.allocated.cpu_millis),
                used_slot(n.allocatable.memory_bytes, n.allocated.memory_bytes),
            ],
            cap_f: [
                cap_float(n.allocatable.cpu_millis),
                cap_float(n.allocatable.memory_bytes),
            ],
            full: [
                f64::from(u8::from(n.allocatable.cpu_millis == 0)),
                f64::from(u8::from(n.allocatable.memory_bytes == 0)),
            ],
        })
        .collect()
}

fn used_slot(cap: u64, used: u64) -> u64 {
    if cap == 0 { 0 } else { used }
}

fn cap_float(cap: u64) -> f64 {
    if cap == 0 { 1.0 } else { as_f64(cap) }
}

/// An amount for a score, which is a ratio: rounding amounts above 2^53 changes nothing that
/// matters to a ranking.
#[allow(clippy::cast_precision_loss)]
fn as_f64(v: u64) -> f64 {
    v as f64
}

/// The position in `slots` of the best node for one replica of `req`.
fn select(nodes: &[NodeView], slots: &[Slot], req: &Request<'_>) -> Option<usize> {
    let need = [req.resources.cpu_millis, req.resources.memory_bytes];
    let spread = req.strategy == Strategy::Spread;
    let check_ports = req.ports.iter().any(|p| p.host_port != 0);
    // (position, penalty, score): lower is better in both; then the lower node name.
    let mut best: Option<(usize, u32, f64)> = None;
    for (pos, s) in slots.iter().enumerate() {
        if !fits(s.cap[0].saturating_sub(s.used[0]), need[0])
            || !fits(s.cap[1].saturating_sub(s.used[1]), need[1])
        {
            continue;
        }
        if check_ports && !ports_free(&nodes[s.index], req.ports) {
            continue;
        }
        // The mean allocated fraction after placing, doubled (the ranking is the same). A zero
        // capacity counts as full: its `used` is 0 in the slot and only a zero request fits, so
        // the numerator is 0, the divisor 1.0 and `full` 1.0.
        let num = [
            as_f64(s.used[0].saturating_add(need[0])),
            as_f64(s.used[1].saturating_add(need[1])),
        ];
        let frac = [
            num[0] / s.cap_f[0] + s.full[0],
            num[1] / s.cap_f[1] + s.full[1],
        ];
        let allocated = frac[0] + frac[1];
        let (penalty, score) = if spread {
            (s.replicas, allocated)
        } else {
            (0, -allocated)
        };
        let better = match best {
            None => true,
            Some((bpos, bpenalty, bscore)) => {
                penalty
                    .cmp(&bpenalty)
                    .then(score.total_cmp(&bscore))
                    .then_with(|| nodes[s.index].name.cmp(&nodes[slots[bpos].index].name))
                    == Ordering::Less
            }
        };
        if better {
            best = Some((pos, penalty, score));
        }
    }
    best.map(|(pos, _, _)| pos)
}

/// Why no node fits: nodes counted per first failing filter, most common first, ties in
/// filter order.
fn explain(nodes: &[NodeView], req: &Request<'_>) -> String {
    if let Some(holder) = req.volume_node {
        let why = match nodes.iter().find(|n| n.name == holder) {
            None => "not registered",
            Some(n) => match first_failure(n, req) {
                Some(Filter::NotReady) => "NotReady",
                Some(f) => f.label(),
                // Fits, yet a batch found no room: what it reserved took the room.
                None => "no room left in this batch",
            },
        };
        return format!("volume data on node {holder} ({why})");
    }
    let mut counts = [0usize; Filter::ALL.len()];
    for node in nodes {
        if let Some(f) = first_failure(node, req) {
            counts[f as usize] += 1;
        }
    }
    let available = nodes.len() - counts.iter().sum::<usize>();
    let mut reason = format!("{available}/{} nodes are available", nodes.len());
    if nodes.is_empty() {
        reason.push_str(": no nodes");
        return reason;
    }
    let mut failing: Vec<Filter> = Filter::ALL
        .into_iter()
        .filter(|f| counts[*f as usize] > 0)
        .collect();
    failing.sort_by_key(|f| Reverse(counts[*f as usize]));
    for (i, f) in failing.into_iter().enumerate() {
        let sep = if i == 0 { ": " } else { ", " };
        let _ = write!(reason, "{sep}{} {}", counts[f as usize], f.label());
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::Protocol;

    const GI: u64 = 1 << 30;

    fn res(cpu_millis: u64, memory_bytes: u64) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes,
        }
    }

    fn node(name: &str, cpu: u64, mem: u64) -> NodeView {
        NodeView::new(name, res(cpu, mem))
    }

    fn selector(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req<'a>(
        sel: &'a BTreeMap<String, String>,
        ports: &'a [PortMapping],
        cpu: u64,
        mem: u64,
        strategy: Strategy,
    ) -> Request<'a> {
        Request {
            deployment: "web",
            resources: res(cpu, mem),
            ports,
            node_selector: sel,
            strategy,
            volume_node: None,
            binds: &[],
        }
    }

    fn tcp(host_port: u32) -> PortMapping {
        PortMapping {
            host_port,
            container_port: 80,
            protocol: Protocol::Tcp as i32,
        }
    }

    fn names(nodes: &[NodeView], placements: &[Placement]) -> Vec<String> {
        placements
            .iter()
            .map(|p| match p {
                Placement::Node(i) => nodes[*i].name.clone(),
                Placement::Unschedulable { reason } => format!("unschedulable: {reason}"),
            })
            .collect()
    }

    fn reason(p: &Placement) -> &str {
        match p {
            Placement::Unschedulable { reason } => reason,
            Placement::Node(i) => panic!("expected unschedulable, got node {i}"),
        }
    }

    #[test]
    fn filter_not_ready() {
        let mut nodes = vec![node("a", 1000, GI), node("b", 1000, GI)];
        nodes[0].ready = false;
        let sel = BTreeMap::new();
        let r = req(&sel, &[], 100, 1, Strategy::Spread);
        assert_eq!(place(&nodes, &r), Placement::Node(1));
        nodes[1].ready = false;
        assert_eq!(
            reason(&place(&nodes, &r)),
            "0/2 nodes are available: 2 not ready"
        );
    }

    #[test]
    fn a_volume_pins_its_replica_to_the_node_with_the_data() {
        let mut nodes = vec![
            node("a", 1000, GI),
            node("b", 1000, GI),
            node("c", 1000, GI),
        ];
        let sel = BTreeMap::new();
        let mut r = req(&sel, &[], 100, 1, Strategy::Spread);
        r.volume_node = Some("b");
        // Spread would pick "a" (lowest name); the data is on "b".
        let placed = place_many(&mut nodes, &r, 2);
        assert_eq!(names(&nodes, &placed), ["b", "b"]);
        nodes[1].ready = false;
        assert_eq!(
            reason(&place(&nodes, &r)),
            "volume data on node b (NotReady)"
        );
        nodes[1].ready = true;
        nodes[1].allocated = res(1000, 0);
        assert_eq!(
            reason(&place(&nodes, &r)),
            "volume data on node b (insufficient cpu)"
        );
        r.volume_node = Some("gone");
        assert_eq!(
            reason(&place(&nodes, &r)),
            "volume data on node gone (not registered)"
        );
        // No volume record yet: any node.
        r.volume_node = None;
        assert_eq!(place(&nodes, &r), Placement::Node(0));
    }

    #[test]
    fn binds_go_only_to_nodes_that_allow_them() {
        let mut nodes = vec![
            node("a", 1000, GI),
            node("b", 1000, GI),
            node("c", 1000, GI),
        ];
        nodes[1].allowed_bind_paths = vec!["/srv".into(), "/data".into()];
        nodes[2].allowed_bind_paths = vec!["/srv".into()];
        let sel = BTreeMap::new();
        let mut r = req(&sel, &[], 0, 0, Strategy::Spread);
        let binds = ["/srv/www".to_string(), "/data".to_string()];
        r.binds = &binds;
        let placed = place_many(&mut nodes, &r, 2);
        assert_eq!(names(&nodes, &placed), ["b", "b"]);
        let binds = ["/srv/www".to_string()];
        r.binds = &binds;
        let placed = place_many(&mut nodes, &r, 2);
        assert_eq!(names(&nodes, &placed), ["c", "c"], "spread over b and c");
        let binds = ["/etc".to_string()];
        r.binds = &binds;
        assert_eq!(
            reason(&place(&nodes, &r)),
            "0/3 nodes are available: 3 bind path not allowed"
        );
        // A bind and a pinned volume: the holder must allow the bind too.
        let binds = ["/data/x".to_string()];
        r.binds = &binds;
        r.volume_node = Some("c");
        assert_eq!(
            reason(&place(&nodes, &r)),
            "volume data on node c (bind path not allowed)"
        );
        r.volume_node = Some("b");
        assert_eq!(place(&nodes, &r), Placement::Node(1));
    }

    #[test]
    fn filter_cpu() {
        let mut nodes = vec![node("a", 1000, GI), node("b", 4000, GI)];
        nodes[1].allocated = res(3500, 0);
        let sel = BTreeMap::new();
        // a has 1000 free, b has 500 free: 600 fits only on a.
        let r = req(&sel, &[], 600, 1, Strategy::Binpack);
        assert_eq!(place(&nodes, &r), Placement::Node(0));
        // Exactly the free amount fits.
        let r = req(&sel, &[], 1000, 1, Strategy::Binpack);
        assert_eq!(place(&nodes, &r), Placement::Node(0));
        let r = req(&sel, &[], 1001, 1, Strategy::Binpack);
        assert_eq!(
            reason(&place(&nodes, &r)),
            "0/2 nodes are available: 2 insufficient cpu"
        );
    }

    #[test]
    fn filter_memory() {
        let mut nodes = vec![node("a", 1000, 2 * GI), node("b", 1000, 8 * GI)];
        nodes[1].allocated = res(0, 7 * GI);
        let sel = BTreeMap::new();
        let r = req(&sel, &[], 0, 2 * GI, Strategy::Spread);
        assert_eq!(place(&nodes, &r), Placement::Node(0));
        let r = req(&sel, &[], 0, 2 * GI + 1, Strategy::Spread);
        assert_eq!(
            reason(&place(&nodes, &r)),
            "0/2 nodes are available: 2 insufficient memory"
        );
    }

    #[test]
    fn filter_host_port() {
        let mut nodes = vec![node("a", 1000, GI), node("b", 1000, GI)];
        nodes[0].host_ports.insert((8080, Protocol::Tcp as i32));
        nodes[1].host_ports.insert((8080, Protocol::Udp as i32));
        let sel = BTreeMap::new();
        // TCP 8080 is taken on a only; UDP 8080 on b does not conflict.
        let ports = [tcp(8080)];
        let r = req(&sel, &ports, 0, 0, Strategy::Spread);
        assert_eq!(place(&nodes, &r), Placement::Node(1));
        nodes[1].host_ports.insert((8080, Protocol::Tcp as i32));
        assert_eq!(
            reason(&place(&nodes, &r)),
            "0/2 nodes are available: 2 host port conflict"
        );
        // host_port 0 publishes nothing.
        let ports = [tcp(0)];
        let r = req(&sel, &ports, 0, 0, Strategy::Spread);
        assert_eq!(place(&nodes, &r), Placement::Node(0));
    }

    #[test]
    fn filter_node_selector() {
        let mut nodes = vec![
            node("a", 1000, GI),
            node("b", 1000, GI),
            node("c", 1000, GI),
        ];
        nodes[0].labels = selector(&[("zone", "a")]);
        nodes[1].labels = selector(&[("zone", "b"), ("disk", "ssd")]);
        nodes[2].labels = selector(&[("zone", "b")]);
        let sel = selector(&[("zone", "b"), ("disk", "ssd")]);
        let r = req(&sel, &[], 0, 0, Strategy::Spread);
        assert_eq!(place(&nodes, &r), Placement::Node(1));
        let sel = selector(&[("zone", "c")]);
        let r = req(&sel, &[], 0, 0, Strategy::Spread);
        assert_eq!(
            reason(&place(&nodes, &r)),
            "0/3 nodes are available: 3 node selector mismatch"
        );
    }

    #[test]
    fn zero_request_fits_a_full_node() {
        let mut nodes = vec![node("a", 1000, GI), node("b", 0, 0)];
        nodes[0].allocated = res(1000, GI);
        let sel = BTreeMap::new();
        let r = req(&sel, &[], 0, 0, Strategy::Spread);
        let placed = place_many(&mut nodes, &r, 4);
        assert_eq!(names(&nodes, &placed), ["a", "b", "a", "b"]);
        // Zero allocatable with something allocated still counts as just full.
        let mut nodes = vec![node("a", 1000, GI), node("b", 0, 0)];
        nodes[0].allocated = res(1000, GI);
        nodes[1].allocated = res(5000, 5 * GI);
        assert_eq!(place(&nodes, &r), Placement::Node(0));
        let r = req(&sel, &[], 0, 0, Strategy::Binpack);
        assert_eq!(place(&nodes, &r), Placement::Node(0));
        assert_eq!(
            reason(&place(&nodes, &req(&sel, &[], 1, 0, Strategy::Spread))),
            "0/2 nodes are available: 2 insufficient cpu"
        );
    }

    #[test]
    fn reason_counts_each_node_under_its_first_failing_filter() {
        let sel = selector(&[("zone", "a")]);
        let mut nodes = vec![
            node("n1", 4000, 8 * GI),
            node("n2", 4000, 8 * GI),
            node("n3", 4000, GI),
            node("n4", 4000, GI),
            node("n5", 4000, 8 * GI),
        ];
        for n in &mut nodes {
            n.labels = sel.clone();
        }
        // Not ready and short of memory: counted as not ready only.
        nodes[0].ready = false;
        nodes[1].ready = false;
        nodes[1].allocatable.memory_bytes = 0;
        // Wrong zone, also a port conflict: counted as selector mismatch.
        nodes[4].labels = selector(&[("zone", "b")]);
        nodes[4].host_ports.insert((80, Protocol::Tcp as i32));
        let ports = [tcp(80)];
        let r = req(&sel, &ports, 1000, 2 * GI, Strategy::Spread);
        assert_eq!(
            reason(&place(&nodes, &r)),
            "0/5 nodes are available: 2 not ready, 2 insufficient memory, 1 node selector mismatch"
        );
        // All five classes; ties keep the filter order.
        nodes[2].host_ports.insert((80, Protocol::Tcp as i32));
        nodes[3].allocated.cpu_millis = 3500;
        nodes.push(node("n6", 4000, GI));
        nodes[5].labels = sel.clone();
        assert_eq!(
            reason(&place(&nodes, &r)),
            "0/6 nodes are available: 2 not ready, 1 node selector mismatch, \
             1 host port conflict, 1 insufficient cpu, 1 insufficient memory"
        );
        assert_eq!(reason(&place(&[], &r)), "0/0 nodes are available: no nodes");
    }

    #[test]
    fn spread_puts_one_replica_per_equal_node_first() {
        let mut nodes = vec![
            node("c", 4000, 8 * GI),
            node("a", 4000, 8 * GI),
            node("b", 4000, 8 * GI),
        ];
        let sel = BTreeMap::new();
        let r = req(&sel, &[], 500, GI, Strategy::Spread);
        let placed = place_many(&mut nodes, &r, 4);
        // Equal nodes: by name; the 4th goes back to the lowest name.
        assert_eq!(names(&nodes, &placed), ["a", "b", "c", "a"]);
        for n in &nodes {
            let expect = if n.name == "a" { 2 } else { 1 };
            assert_eq!(n.replicas_by_deployment["web"], expect);
            assert_eq!(n.allocated.cpu_millis, 500 * u64::from(expect));
        }
    }

    #[test]
    fn spread_prefers_a_new_node_over_a_much_emptier_one() {
        let mut nodes = vec![node("big", 64_000, 256 * GI), node("small", 2000, 4 * GI)];
        let sel = BTreeMap::new();
        let r = req(&sel, &[], 500, GI, Strategy::Spread);
        let placed = place_many(&mut nodes, &r, 3);
        assert_eq!(names(&nodes, &placed), ["big", "small", "big"]);
        // Another deployment's replicas do not count against this one.
        let mut other = r;
        other.deployment = "api";
        let placed = place_many(&mut nodes, &other, 1);
        assert_eq!(names(&nodes, &placed), ["big"]);
    }

    #[test]
    fn spread_prefers_least_allocated() {
        let mut nodes = vec![node("a", 4000, 8 * GI), node("b", 4000, 8 * GI)];
        nodes[0].allocated = res(2000, 0);
        let sel = BTreeMap::new();
        let r = req(&sel, &[], 100, GI, Strategy::Spread);
        assert_eq!(place(&nodes, &r), Placement::Node(1));
    }

    #[test]
    fn binpack_fills_the_fullest_node_that_fits_first() {
        let mut nodes = vec![
            node("empty", 4000, 8 * GI),
            node("half", 4000, 8 * GI),
            node("nearly", 4000, 8 * GI),
        ];
        nodes[1].allocated = res(2000, 4 * GI);
        nodes[2].allocated = res(3500, 7 * GI);
        let sel = BTreeMap::new();
        // 1000m does not fit on "nearly": the fullest that fits is "half", until it is full.
        let r = req(&sel, &[], 1000, 2 * GI, Strategy::Binpack);
        let placed = place_many(&mut nodes, &r, 4);
        assert_eq!(names(&nodes, &placed), ["half", "half", "empty", "empty"]);
        // A small one tops up "nearly".
        let r = req(&sel, &[], 500, GI, Strategy::Binpack);
        assert_eq!(place(&nodes, &r), Placement::Node(2));
    }

    #[test]
    fn ties_are_broken_by_name() {
        let sel = BTreeMap::new();
        for strategy in [Strategy::Spread, Strategy::Binpack] {
            let nodes = vec![
                node("node-2", 4000, 8 * GI),
                node("node-10", 4000, 8 * GI),
                node("node-1", 4000, 8 * GI),
            ];
            let r = req(&sel, &[], 100, GI, strategy);
            assert_eq!(place(&nodes, &r), Placement::Node(2), "{strategy:?}");
        }
        // Equal fractions of different capacities are a tie as well.
        let mut nodes = vec![node("y", 2000, 2 * GI), node("x", 4000, 4 * GI)];
        nodes[0].allocated = res(1000, GI);
        nodes[1].allocated = res(2000, 2 * GI);
        let r = req(&sel, &[], 0, 0, Strategy::Binpack);
        assert_eq!(place(&nodes, &r), Placement::Node(1));
    }

    /// A small deterministic generator, so the test needs no dependency.
    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    fn cluster(n: usize) -> Vec<NodeView> {
        let mut seed = 7;
        (0..n)
            .map(|i| {
                let mut v = node(
                    &format!("node-{i:03}"),
                    [2000, 4000, 8000][(lcg(&mut seed) % 3) as usize],
                    [4, 8, 16][(lcg(&mut seed) % 3) as usize] * GI,
                );
                v.ready = lcg(&mut seed) % 10 >= 1;
                v.labels = selector(&[("zone", ["a", "b", "c"][i % 3])]);
                v
            })
            .collect()
    }

    fn run(nodes: &mut [NodeView]) -> Vec<String> {
        let none = BTreeMap::new();
        let zone_a = selector(&[("zone", "a")]);
        let ports = [tcp(9000)];
        let mut out = Vec::new();
        for (i, sel) in [&none, &zone_a, &none, &zone_a].into_iter().enumerate() {
            let r = Request {
                deployment: ["w", "x", "y", "z"][i],
                resources: res(300 + 200 * i as u64, GI / 2),
                ports: if i == 2 { &ports } else { &[] },
                node_selector: sel,
                strategy: if i % 2 == 0 {
                    Strategy::Spread
                } else {
                    Strategy::Binpack
                },
                volume_node: None,
                binds: &[],
            };
            let placed = place_many(nodes, &r, 40);
            out.extend(names(nodes, &placed));
        }
        out
    }

    #[test]
    fn deterministic_and_independent_of_node_order() {
        let first = run(&mut cluster(30));
        let second = run(&mut cluster(30));
        assert_eq!(first, second);
        assert!(first.iter().any(|n| n.starts_with("unschedulable")));
        assert!(first.iter().any(|n| !n.starts_with("unschedulable")));
        // Shuffled (a fixed permutation): the same node names, the same reasons.
        let mut shuffled = cluster(30);
        let mut seed = 99;
        for i in (1..shuffled.len()).rev() {
            let bound = u64::try_from(i).unwrap() + 1;
            let j = usize::try_from(lcg(&mut seed) % bound).unwrap();
            shuffled.swap(i, j);
        }
        assert_ne!(shuffled, cluster(30));
        assert_eq!(run(&mut shuffled), first);
    }

    #[test]
    fn place_many_matches_place_then_reserve() {
        let mut batch = cluster(20);
        let mut single = cluster(20);
        let sel = BTreeMap::new();
        let r = req(&sel, &[], 700, GI, Strategy::Spread);
        let placed = place_many(&mut batch, &r, 50);
        for p in &placed {
            let one = place(&single, &r);
            assert_eq!(&one, p);
            if let Placement::Node(i) = one {
                single[i].reserve(&r);
            }
        }
        assert_eq!(batch, single);
    }

    #[test]
    fn host_ports_conflict_across_replicas_of_a_batch() {
        let mut nodes = vec![node("a", 8000, 8 * GI), node("b", 8000, 8 * GI)];
        let sel = BTreeMap::new();
        let ports = [tcp(443)];
        // Binpack would stack them, but each node has one 443/tcp.
        let r = req(&sel, &ports, 100, GI, Strategy::Binpack);
        let placed = place_many(&mut nodes, &r, 3);
        assert_eq!(placed[0], Placement::Node(0));
        assert_eq!(placed[1], Placement::Node(1));
        assert_eq!(
            reason(&placed[2]),
            "0/2 nodes are available: 2 host port conflict"
        );
        assert!(nodes[0].host_ports.contains(&(443, Protocol::Tcp as i32)));
        assert!(nodes[1].host_ports.contains(&(443, Protocol::Tcp as i32)));
        assert_eq!(nodes[0].allocated, res(100, GI));
    }

    #[test]
    fn unschedulable_until_allocatable_grows() {
        let mut nodes = vec![node("a", 1000, 2 * GI), node("b", 1000, 2 * GI)];
        let sel = BTreeMap::new();
        let r = req(&sel, &[], 1500, GI, Strategy::Spread);
        let placed = place_many(&mut nodes, &r, 2);
        let expect = Placement::Unschedulable {
            reason: "0/2 nodes are available: 2 insufficient cpu".into(),
        };
        assert_eq!(placed, [expect.clone(), expect]);
        assert_eq!(nodes[0].allocated, res(0, 0));
        assert!(nodes[0].replicas_by_deployment.is_empty());
        nodes[1].allocatable.cpu_millis = 2000;
        let placed = place_many(&mut nodes, &r, 2);
        assert_eq!(placed[0], Placement::Node(1));
        assert_eq!(
            reason(&placed[1]),
            "0/2 nodes are available: 2 insufficient cpu"
        );
    }

    #[test]
    fn place_many_of_zero_is_empty() {
        let mut nodes = vec![node("a", 1000, GI)];
        let sel = BTreeMap::new();
        let r = req(&sel, &[], 1, 1, Strategy::Spread);
        assert!(place_many(&mut nodes, &r, 0).is_empty());
        assert_eq!(nodes[0].allocated, res(0, 0));
    }
}
