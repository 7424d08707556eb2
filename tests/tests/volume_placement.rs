//! Where replicas with storage go, against a real `berth-scheduler` (its store the embedded
//! redb file, or etcd with BERTH_TEST_STORE=etcd) and simulated nodes that run whatever they
//! are assigned: a replica using a named volume stays on the node that holds the data, and
//! waits for that node rather than start empty elsewhere; binds go only to nodes whose
//! `--allow-bind` list covers them, and Apply refuses a bind no node allows.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_proto::v1::{
    BindMount, ClusterVolume, Deployment, DeploymentSpec, ListVolumesRequest, Resources,
    ScaleRequest, VolumeMount,
};
use berth_tests::cluster::{DeployApi, SchedulerProc, all_ready};
use berth_tests::fake_node::{Behaviour, Sessions, fake_agent_with};
use berth_tests::poll_until;

const WAIT: Duration = Duration::from_secs(60);
/// The image is never pulled: simulated nodes take every assignment as running.
const IMAGE: &str = "volume-placement:1";

/// A scheduler and simulated nodes (each with its `--allow-bind` paths); the nodes are tasks
/// of `_nodes`, so they stop with the test, pass or fail, and so does the scheduler.
struct Sim {
    sched: SchedulerProc,
    api: DeployApi,
    nodes: BTreeMap<String, Behaviour>,
    _nodes: tokio::runtime::Runtime,
}

impl Sim {
    fn start(nodes: &[(&str, &[&str])]) -> Self {
        let sched = SchedulerProc::start(&["--reschedule-delay-ms", "1000"]);
        let rt = tokio::runtime::Runtime::new().expect("a runtime for the nodes");
        let mut behaviours = BTreeMap::new();
        for (name, allowed) in nodes {
            let behaviour = Behaviour {
                runs_assignments: true,
                allowed_bind_paths: allowed.iter().map(|p| (*p).to_string()).collect(),
                ..Behaviour::default()
            };
            rt.spawn(fake_agent_with(
                (*name).to_string(),
                vec![sched.endpoint()],
                Sessions::default(),
                behaviour.clone(),
            ));
            behaviours.insert((*name).to_string(), behaviour);
        }
        let api = DeployApi::new(&sched.endpoint(), WAIT);
        let count = nodes.len();
        poll_until("every simulated node ready", WAIT, || {
            let listed = api.nodes();
            (listed.len() == count && listed.iter().all(|n| n.ready)).then_some(())
        });
        Self {
            sched,
            api,
            nodes: behaviours,
            _nodes: rt,
        }
    }

    fn set_silent(&self, node: &str, silent: bool) {
        self.nodes[node].silent.store(silent, Ordering::Relaxed);
    }

    fn scale(&self, name: &str, replicas: u32) {
        let mut c = self.api.client.clone();
        self.api
            .call(c.scale(ScaleRequest {
                name: name.into(),
                replicas,
                ..Default::default()
            }))
            .expect("scale");
    }

    fn volumes(&self) -> Vec<ClusterVolume> {
        let mut c = self.api.client.clone();
        self.api
            .call(c.list_volumes(ListVolumesRequest {}))
            .expect("ListVolumes")
            .volumes
    }

    /// Waits until `name` runs `n` ready replicas of its current revision; returns their
    /// nodes, sorted.
    fn running_on(&self, name: &str, n: u32) -> Vec<String> {
        let d = self
            .api
            .wait(name, &format!("{n} ready replicas of {name}"), |d| {
                all_ready(d, n)
            });
        nodes_of(&d)
    }
}

fn nodes_of(d: &Deployment) -> Vec<String> {
    let mut nodes: Vec<String> = d.replica_status.iter().map(|r| r.node.clone()).collect();
    nodes.sort();
    nodes
}

fn spec(name: &str, replicas: u32, cpu_millis: u64) -> DeploymentSpec {
    DeploymentSpec {
        name: name.into(),
        image: IMAGE.into(),
        replicas,
        resources: Some(Resources {
            cpu_millis,
            memory_bytes: 16 << 20,
        }),
        ..Default::default()
    }
}

fn with_volume(mut s: DeploymentSpec) -> DeploymentSpec {
    s.volumes = vec![VolumeMount {
        name: "data".into(),
        path: "/var/lib/db".into(),
        read_only: false,
    }];
    s
}

#[test]
fn a_replica_stays_with_its_volume_and_waits_for_its_node() {
    let sim = Sim::start(&[("node-a", &[]), ("node-b", &[])]);
    // Both nodes empty: spread breaks the tie by name, so the data lands on node-a.
    sim.api.apply(with_volume(spec("db", 1, 100)));
    assert_eq!(sim.running_on("db", 1), ["node-a"]);
    let volumes = sim.volumes();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(
        (volumes[0].name.as_str(), volumes[0].node.as_str()),
        ("data", "node-a")
    );
    assert_eq!(volumes[0].used_by, ["db"]);
    assert!(volumes[0].created_at_ms > 0, "{volumes:?}");

    // Make node-a the busier node, so that spread alone would now choose node-b.
    sim.scale("db", 0);
    sim.api
        .wait("db", "db scaled to 0", |d| d.replica_status.is_empty());
    // Until node-a reports the container gone, it still holds the replica's resources.
    poll_until("node-a empty", WAIT, || {
        let nodes = sim.api.nodes();
        nodes
            .iter()
            .any(|n| n.name == "node-a" && n.containers == 0)
            .then_some(())
    });
    sim.api.apply(spec("filler", 1, 2000));
    assert_eq!(sim.running_on("filler", 1), ["node-a"]);
    sim.scale("db", 1);
    assert_eq!(sim.running_on("db", 1), ["node-a"], "back with its data");
    // A new revision's replica goes to the data too.
    let mut next = with_volume(spec("db", 1, 100));
    next.env.insert("REVISION".into(), "2".into());
    assert!(sim.api.apply(next).changed);
    let d = sim.api.wait("db", "revision 2 ready", |d| {
        d.revision == 2 && all_ready(d, 1)
    });
    assert_eq!(nodes_of(&d), ["node-a"]);

    // node-a stops heartbeating: its replica is replaced, and the new one waits for node-a.
    sim.set_silent("node-a", true);
    let pending = sim.api.wait("db", "a replica pending for its data", |d| {
        d.replica_status.len() == 1
            && d.replica_status[0].node.is_empty()
            && d.replica_status[0].reason == "volume data on node node-a (NotReady)"
    });
    let waiting = pending.replica_status[0].container_id.clone();
    // The filler, which has no data, moves to node-b meanwhile; db never does.
    assert_eq!(sim.running_on("filler", 1), ["node-b"]);
    let d = sim.api.get("db");
    assert_eq!(d.replica_status.len(), 1, "{d:?}");
    assert_eq!(d.replica_status[0].container_id, waiting);
    assert!(d.replica_status[0].node.is_empty(), "{d:?}");
    assert_eq!(
        d.replica_status[0].reason,
        "volume data on node node-a (NotReady)"
    );

    // node-a is back: the waiting replica runs there.
    sim.set_silent("node-a", false);
    assert_eq!(sim.running_on("db", 1), ["node-a"]);
    let volumes = sim.volumes();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0].node, "node-a", "the record never moves");
    assert!(
        sim.sched.log().contains("volume data placed"),
        "{}",
        sim.sched.log()
    );
}

#[test]
fn binds_go_only_to_nodes_that_allow_them() {
    let sim = Sim::start(&[("node-a", &["/srv/other"]), ("node-b", &["/srv/vp"])]);
    let mut s = spec("web", 2, 100);
    s.binds = vec![BindMount {
        source: "/srv/vp/www".into(),
        path: "/www".into(),
        read_only: true,
    }];
    sim.api.apply(s.clone());
    // Spread would put one replica on each node; only node-b allows the bind.
    assert_eq!(sim.running_on("web", 2), ["node-b", "node-b"]);

    s.name = "etc".into();
    s.binds[0].source = "/etc".into();
    let mut c = sim.api.client.clone();
    let refused = sim
        .api
        .call(c.apply(berth_proto::v1::ApplyRequest { spec: Some(s) }))
        .expect_err("a bind no node allows is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let message = refused.message();
    assert!(
        message.contains("spec.binds[0].source")
            && message.contains("/etc")
            && message.contains("node-b: /srv/vp"),
        "{message}"
    );
    let mut c = sim.api.client.clone();
    let gone = sim.api.call(c.get(berth_proto::v1::GetDeploymentRequest {
        name: "etc".into(),
        ..Default::default()
    }));
    assert_eq!(gone.expect_err("not created").code(), tonic::Code::NotFound);
}
