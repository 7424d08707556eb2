//! The scheduler's control loop under a paused tokio clock: the scheduler runs in this
//! process on a port-0 loopback listener with a redb store of its own, simulated nodes
//! register and heartbeat over gRPC, and the test lets simulated time pass instead of waiting.
//! With every task idle, tokio moves the paused clock to the next timer (a heartbeat, the
//! loop's tick); redb's blocking calls hold it still while they run. So minutes of heartbeat
//! grace, approval timeout and progress deadline take well under a second of real time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_proto::v1::deployment_service_client::DeploymentServiceClient;
use berth_proto::v1::{
    ApplyRequest, Approval, Deployment, DeploymentSpec, GetDeploymentRequest, HistoryRequest,
    ListNodesRequest, ListServicesRequest, NodeInfo, Resources, RevisionRecord, RolloutPhase,
    RolloutSettings, ScaleRequest, Service,
};
use berth_scheduler::Config;
use berth_scheduler::store::redb::RedbStore;
use berth_tests::cluster::with_http_service;
use berth_tests::fake_node::{Behaviour, Logged, NEVER_READY_ENV, Seen, Sessions, fake_agent_with};
use tokio::net::TcpListener;
use tokio::time::{Duration, Instant};
use tonic::transport::Channel;

const HEARTBEAT: Duration = Duration::from_secs(1);
const MISSED_HEARTBEATS: u32 = 3;
const GRACE: Duration = HEARTBEAT.saturating_mul(MISSED_HEARTBEATS);
const RESCHEDULE_DELAY: Duration = Duration::from_secs(2);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Simulated time any one wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(120);
/// How often a wait looks again, in simulated time.
const STEP: Duration = Duration::from_millis(100);

/// A scheduler and its simulated nodes, all tasks of this test's runtime: they end with it,
/// pass or fail, and so does the temporary store.
struct Sim {
    client: DeploymentServiceClient<Channel>,
    nodes: BTreeMap<String, Behaviour>,
    /// What every node received and acknowledged, in one order across them.
    seen: Arc<std::sync::Mutex<Vec<Logged>>>,
    _dir: tempfile::TempDir,
}

impl Sim {
    /// Starts the scheduler and one simulated node per name, each running its assignments,
    /// and waits until every node is ready.
    async fn start(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let store = RedbStore::open(&dir.path().join("state.redb")).expect("a redb store");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
        let config = Config {
            heartbeat_interval: HEARTBEAT,
            missed_heartbeats: MISSED_HEARTBEATS,
            reschedule_delay: RESCHEDULE_DELAY,
            drain_timeout: DRAIN_TIMEOUT,
            ..Config::default()
        };
        tokio::spawn(async move {
            let served = berth_scheduler::run(config, Arc::new(store), listener, async {
                std::future::pending::<()>().await;
            })
            .await;
            panic!("the scheduler stopped: {served:?}");
        });
        let mut nodes = BTreeMap::new();
        let seen = Arc::default();
        for name in names {
            let behaviour = Behaviour {
                runs_assignments: true,
                seen: Arc::clone(&seen),
                ..Behaviour::default()
            };
            let agent = fake_agent_with(
                (*name).to_string(),
                vec![endpoint.clone()],
                Sessions::default(),
                behaviour.clone(),
            );
            tokio::spawn(agent);
            nodes.insert((*name).to_string(), behaviour);
        }
        let channel = tonic::transport::Endpoint::from_shared(endpoint)
            .expect("a valid endpoint")
            .connect_lazy();
        let sim = Self {
            client: DeploymentServiceClient::new(channel),
            nodes,
            seen,
            _dir: dir,
        };
        let count = names.len();
        sim.until("every node ready", async || {
            let nodes = sim.nodes().await;
            (nodes.len() == count && nodes.iter().all(|n| n.ready)).then_some(())
        })
        .await;
        sim
    }

    /// Stops `node`'s heartbeats; its session stays open.
    fn silence(&self, node: &str) {
        self.nodes[node].silent.store(true, Ordering::Relaxed);
    }

    async fn apply(&self, spec: DeploymentSpec) {
        let request = ApplyRequest { spec: Some(spec) };
        self.client
            .clone()
            .apply(request)
            .await
            .expect("the spec applies");
    }

    async fn get(&self, name: &str) -> Deployment {
        let request = GetDeploymentRequest {
            name: name.into(),
            ..Default::default()
        };
        let got = self.client.clone().get(request).await;
        got.expect("the deployment exists").into_inner()
    }

    async fn services(&self) -> Vec<Service> {
        let listed = self
            .client
            .clone()
            .list_services(ListServicesRequest {
                ..Default::default()
            })
            .await;
        listed.expect("services listed").into_inner().services
    }

    async fn nodes(&self) -> Vec<NodeInfo> {
        let listed = self.client.clone().list_nodes(ListNodesRequest {}).await;
        listed.expect("nodes listed").into_inner().nodes
    }

    async fn history(&self, name: &str) -> Vec<RevisionRecord> {
        let request = HistoryRequest {
            name: name.into(),
            ..Default::default()
        };
        let history = self.client.clone().history(request).await;
        history.expect("its history").into_inner().revisions
    }

    /// Lets simulated time pass until `check` answers, for at most [`PATIENCE`].
    async fn until<T>(&self, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        let give_up = Instant::now() + PATIENCE;
        loop {
            if let Some(found) = check().await {
                return found;
            }
            assert!(
                Instant::now() < give_up,
                "no {what} within {PATIENCE:?} of simulated time"
            );
            tokio::time::sleep(STEP).await;
        }
    }

    /// Waits until `name` completed a rollout to `revision` with every replica ready and of
    /// that revision.
    async fn until_complete(&self, name: &str, revision: u64) -> Deployment {
        let what = format!("{name} complete at revision {revision}");
        self.until(&what, async || {
            let d = self.get(name).await;
            let done = d.phase == RolloutPhase::Complete as i32
                && d.revision == revision
                && d.ready_replicas == d.replicas
                && u32::try_from(d.replica_status.len()) == Ok(d.replicas)
                && d.replica_status.iter().all(|r| r.revision == revision);
            done.then_some(d)
        })
        .await
    }
}

/// A deployment of `replicas` that rolls out as the spec's `rollout` says.
fn spec(version: &str, replicas: u32, rollout: RolloutSettings) -> DeploymentSpec {
    DeploymentSpec {
        name: "web".into(),
        image: "busybox:latest".into(),
        env: [("VERSION".to_string(), version.to_string())].into(),
        replicas,
        resources: Some(Resources {
            cpu_millis: 100,
            memory_bytes: 32 << 20,
        }),
        rollout: Some(rollout),
        ..DeploymentSpec::default()
    }
}

fn outcome(history: &[RevisionRecord], revision: u64) -> Option<(RolloutPhase, String)> {
    let r = history.iter().find(|r| r.revision == revision)?;
    let phase = RolloutPhase::try_from(r.outcome).unwrap_or(RolloutPhase::Unspecified);
    Some((phase, r.message.clone()))
}

/// A node that stops heartbeating is NotReady once the grace (three missed heartbeats) has
/// passed, and its replica is replaced on the other node once the reschedule delay has too.
#[tokio::test(start_paused = true)]
async fn a_silent_node_goes_not_ready_after_the_grace_then_its_replica_moves() {
    let sim = Sim::start(&["grace-a", "grace-b"]).await;
    sim.apply(spec("v1", 1, RolloutSettings::default())).await;
    let before = sim.until_complete("web", 1).await;
    let first = before.replica_status[0].clone();
    let lost = first.node.clone();

    sim.silence(&lost);
    let silenced = Instant::now();
    sim.until("the silent node NotReady", async || {
        let nodes = sim.nodes().await;
        nodes
            .iter()
            .any(|n| n.name == lost && !n.ready)
            .then_some(())
    })
    .await;
    let not_ready = silenced.elapsed();
    // Its last heartbeat went out at most one interval before the silence.
    assert!(
        not_ready >= GRACE - HEARTBEAT,
        "NotReady {not_ready:?} after the last heartbeats stopped, before the grace of {GRACE:?}"
    );
    let meanwhile = sim.get("web").await;
    assert_eq!(
        meanwhile.replica_status[0].container_id, first.container_id,
        "the replica moved before the reschedule delay: {meanwhile:?}"
    );

    let moved = sim
        .until("the replica replaced on the other node", async || {
            let d = sim.get("web").await;
            let r = d.replica_status.first()?;
            (d.ready_replicas == 1 && r.node != lost && r.ready).then_some(r.clone())
        })
        .await;
    let replaced = silenced.elapsed();
    assert_ne!(moved.container_id, first.container_id, "a new replica");
    assert!(
        replaced >= GRACE + RESCHEDULE_DELAY - HEARTBEAT,
        "replaced {replaced:?} after the silence, before grace and reschedule delay"
    );
}

/// A revision awaiting manual approval past its approval timeout is rejected: the stable
/// revision keeps serving, and the history records the rejection.
#[tokio::test(start_paused = true)]
async fn an_approval_that_times_out_is_a_rejection() {
    let sim = Sim::start(&["approval-a"]).await;
    sim.apply(spec("v1", 2, RolloutSettings::default())).await;
    sim.until_complete("web", 1).await;
    let manual = RolloutSettings {
        approval: Approval::Manual as i32,
        approval_timeout_s: 30,
        ..RolloutSettings::default()
    };
    sim.apply(spec("v2", 2, manual)).await;
    let applied = Instant::now();

    tokio::time::sleep(Duration::from_secs(20)).await;
    let waiting = sim.get("web").await;
    assert_eq!(
        (waiting.phase, waiting.revision),
        (RolloutPhase::AwaitingApproval as i32, 2),
        "still awaiting approval 20 s into a 30 s timeout: {waiting:?}"
    );
    assert!(
        waiting.replica_status.iter().all(|r| r.revision == 1),
        "revision 1 serves while revision 2 waits: {waiting:?}"
    );

    let d = sim.until_complete("web", 1).await;
    let rejected_after = applied.elapsed();
    assert!(
        rejected_after >= Duration::from_secs(30),
        "rejected {rejected_after:?} after the apply, before the 30 s timeout"
    );
    assert!(
        d.message
            .contains("revision 2 rejected: approval timed out"),
        "the deployment says why: {:?}",
        d.message
    );
    let (phase, why) = outcome(&sim.history("web").await, 2).expect("revision 2 in the history");
    assert_eq!(
        (phase, why.as_str()),
        (RolloutPhase::Rejected, "approval timed out")
    );
}

/// A revision whose replicas never become ready fails at its progress deadline and rolls back
/// to the last good spec, as a new revision.
#[tokio::test(start_paused = true)]
async fn a_rollout_that_never_becomes_ready_fails_at_its_deadline_and_rolls_back() {
    let sim = Sim::start(&["deadline-a"]).await;
    let rollout = RolloutSettings {
        progress_deadline_s: 20,
        ..RolloutSettings::default()
    };
    sim.apply(spec("v1", 2, rollout.clone())).await;
    sim.until_complete("web", 1).await;
    let mut broken = spec("v2", 2, rollout);
    broken.env.insert(NEVER_READY_ENV.into(), "1".into());
    sim.apply(broken).await;
    let applied = Instant::now();

    tokio::time::sleep(Duration::from_secs(10)).await;
    let progressing = sim.get("web").await;
    assert_eq!(
        (progressing.phase, progressing.revision),
        (RolloutPhase::Progressing as i32, 2),
        "still progressing 10 s into a 20 s deadline: {progressing:?}"
    );
    let serving = |revision: u64| {
        let replicas = progressing.replica_status.iter();
        replicas
            .filter(|r| r.revision == revision && r.ready)
            .count()
    };
    assert_eq!(
        (serving(1), serving(2)),
        (2, 0),
        "revision 1 keeps serving meanwhile: {progressing:?}"
    );

    let d = sim.until_complete("web", 3).await;
    let rolled_back_after = applied.elapsed();
    assert!(
        rolled_back_after >= Duration::from_secs(20),
        "rolled back {rolled_back_after:?} after the apply, before the 20 s deadline"
    );
    assert_eq!(d.message, "rolled back from revision 2");
    assert_eq!(
        d.spec.as_ref().and_then(|s| s.env.get("VERSION")),
        Some(&"v1".to_string()),
        "revision 3 runs revision 1's spec"
    );
    let (phase, why) = outcome(&sim.history("web").await, 2).expect("revision 2 in the history");
    assert_eq!(phase, RolloutPhase::Failed);
    assert!(
        why.starts_with("progress deadline of 20s exceeded"),
        "revision 2 failed for its deadline: {why:?}"
    );
}

/// Whether a service set names `id` as an endpoint of any service.
fn has_endpoint(set: &berth_proto::v1::ServiceSet, id: &str) -> bool {
    let mut endpoints = set.services.iter().flat_map(|s| &s.endpoints);
    endpoints.any(|e| e.container_id == id)
}

/// Where, in the shared log, replica `id` (on `node`) drained: the first service set sent
/// without it (after the last one with it), its generation, and the first assignment set of
/// its node without it (after the last one with it).
fn drain_of(log: &[Logged], id: &str, node: &str) -> (usize, u64, usize) {
    let last_with = |is: &dyn Fn(&Seen) -> bool| {
        log.iter()
            .rposition(|l| l.node == node && is(&l.seen))
            .unwrap_or_else(|| panic!("{id} never appeared on {node}: {log:#?}"))
    };
    let in_set = |s: &Seen| matches!(s, Seen::Services(set) if has_endpoint(set, id));
    let assigned = |s: &Seen| matches!(s, Seen::Assignments(a) if a.assignments.iter().any(|a| a.container_id == id));
    let (set_with, assigned_with) = (last_with(&in_set), last_with(&assigned));
    let after = |from: usize, is: &dyn Fn(&Seen) -> bool| {
        (from + 1..log.len())
            .find(|&i| log[i].node == node && is(&log[i].seen))
            .unwrap_or_else(|| panic!("nothing after entry {from} for {id} on {node}: {log:#?}"))
    };
    let set_without = after(set_with, &|s| matches!(s, Seen::Services(_)));
    let Seen::Services(set) = &log[set_without].seen else {
        unreachable!("found as a service set")
    };
    let withdrawn = after(assigned_with, &|s| matches!(s, Seen::Assignments(_)));
    (set_without, set.generation, withdrawn)
}

/// The index of `node`'s first acknowledgement of `generation` or a later set.
fn ack_of(log: &[Logged], node: &str, generation: u64) -> Option<usize> {
    log.iter().position(|l| {
        l.node == node && matches!(l.seen, Seen::ServicesApplied(g) if g >= generation)
    })
}

/// A deployment with service ports gets a virtual IP and its ready replicas as endpoints.
/// During a rolling update each old replica first leaves the service set, every node
/// acknowledges a set without it, and only then is its assignment withdrawn (which is what
/// makes an agent stop it).
#[tokio::test(start_paused = true)]
async fn a_replaced_replica_leaves_the_service_set_before_it_is_stopped() {
    let sim = Sim::start(&["drain-a", "drain-b"]).await;
    sim.apply(with_http_service(spec("v1", 2, RolloutSettings::default())))
        .await;
    let v1 = sim.until_complete("web", 1).await;
    assert!(
        v1.virtual_ip.starts_with("10.96."),
        "a VIP from the default service network: {v1:?}"
    );
    let service = sim
        .until("both replicas as endpoints", async || {
            let services = sim.services().await;
            let web = services.into_iter().find(|s| s.name == "web")?;
            (web.endpoints.len() == 2).then_some(web)
        })
        .await;
    assert_eq!(service.virtual_ip, v1.virtual_ip);
    assert!(
        service.endpoints.iter().all(|e| e.ip.starts_with("10.88.")),
        "{service:?}"
    );

    sim.apply(with_http_service(spec("v2", 2, RolloutSettings::default())))
        .await;
    let v2 = sim.until_complete("web", 2).await;
    assert_eq!(
        v2.virtual_ip, v1.virtual_ip,
        "the VIP stays across revisions"
    );
    // The last withdrawal is sent as the rollout completes: let it arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = sim.seen.lock().unwrap().clone();
    for old in &v1.replica_status {
        let (set_without, generation, withdrawn) = drain_of(&log, &old.container_id, &old.node);
        assert!(
            set_without < withdrawn,
            "{}: stopped before it left the set",
            old.container_id
        );
        for node in sim.nodes.keys() {
            let ack = ack_of(&log, node, generation);
            assert!(
                ack.is_some_and(|a| a < withdrawn),
                "{}: withdrawn (entry {withdrawn}) before {node} acknowledged generation {generation} (entry {ack:?}): {log:#?}",
                old.container_id
            );
        }
    }
}

/// A node that never acknowledges holds a removed replica back only for the drain timeout:
/// then it is stopped anyway.
#[tokio::test(start_paused = true)]
async fn a_node_that_never_acknowledges_delays_a_stop_by_the_drain_timeout_only() {
    let sim = Sim::start(&["stuck-a", "stuck-b"]).await;
    sim.apply(with_http_service(spec("v1", 2, RolloutSettings::default())))
        .await;
    let before = sim.until_complete("web", 1).await;
    sim.until("both replicas as endpoints", async || {
        let services = sim.services().await;
        (services.first()?.endpoints.len() == 2).then_some(())
    })
    .await;
    sim.nodes["stuck-b"]
        .withhold_service_acks
        .store(true, Ordering::Relaxed);
    let request = ScaleRequest {
        name: "web".into(),
        replicas: 1,
        ..Default::default()
    };
    sim.client.clone().scale(request).await.expect("scaled");
    let after = sim
        .until("one replica left", async || {
            let d = sim.get("web").await;
            (d.replica_status.len() == 1).then_some(d)
        })
        .await;
    let kept = &after.replica_status[0].container_id;
    let removed = before
        .replica_status
        .iter()
        .find(|r| r.container_id != *kept)
        .expect("the removed replica");
    sim.until("the removed replica withdrawn", async || {
        let log = sim.seen.lock().unwrap().clone();
        let withdrawn = log.iter().rev().find(|l| l.node == removed.node).is_some_and(|l| {
            matches!(&l.seen, Seen::Assignments(a) if a.assignments.iter().all(|a| a.container_id != removed.container_id))
        });
        withdrawn.then_some(())
    })
    .await;
    let log = sim.seen.lock().unwrap().clone();
    let (set_without, generation, withdrawn) = drain_of(&log, &removed.container_id, &removed.node);
    assert_eq!(
        ack_of(&log, "stuck-b", generation),
        None,
        "stuck-b never acknowledged"
    );
    let waited = log[withdrawn].at - log[set_without].at;
    assert!(
        waited >= DRAIN_TIMEOUT - Duration::from_millis(300),
        "withdrawn {waited:?} after the set without it, before the drain timeout of {DRAIN_TIMEOUT:?}"
    );
}
