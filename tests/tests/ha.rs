//! Three schedulers on one etcd: one leads, the others forward deploys to it and send agents
//! to it; kill -9 the leader in the middle of a rollout and another takes over, the agents
//! follow, the rollout completes, no revision is lost and no replica is started twice. And a
//! three-member etcd with one member down keeps the control plane working. A standby's
//! dashboard sends visitors to the leader's.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proto::v1::agent_service_client::AgentServiceClient;
use berth_proto::v1::*;
use berth_tests::agent_node::AgentNode;
use berth_tests::cluster::{
    DeployApi, Fabric, SchedulerProc, all_ready, httpd_spec, start_nodes_at,
};
use berth_tests::dashboard::request;
use berth_tests::etcd::EtcdCluster;
use berth_tests::{free_loopback_addr, http_status, poll_until};

const IMAGE: &str = "ha-busybox:1";
const WAIT: Duration = Duration::from_secs(90);

fn web(version: &str, replicas: u32) -> DeploymentSpec {
    httpd_spec("web", IMAGE, version, replicas)
}

/// Three schedulers sharing `etcd` under a prefix of this test's own, two agents that know
/// all three, and the fabric linking the agents.
struct HaCluster {
    scheds: Vec<SchedulerProc>,
    _nodes: Vec<AgentNode>,
    _fabric: Fabric,
}

impl HaCluster {
    /// `lease`: the leader's lease in seconds (short for fast failover tests; the default,
    /// long enough to ride out an etcd member's loss, otherwise).
    fn start(etcd: &EtcdCluster, tag: &str, lease: u32) -> Self {
        let mut flags = etcd.scheduler_flags(tag, lease);
        flags.extend(["--reschedule-delay-ms".into(), "2000".into()]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let scheds: Vec<SchedulerProc> =
            (0..3).map(|_| SchedulerProc::start_exact(&flags)).collect();
        let endpoints: Vec<String> = scheds.iter().map(SchedulerProc::endpoint).collect();
        let mut fabric = Fabric::new();
        let nodes = start_nodes_at(&endpoints.join(","), &mut fabric, 2, tag, IMAGE);
        let c = Self {
            scheds,
            _nodes: nodes,
            _fabric: fabric,
        };
        c.leader();
        c
    }

    /// The index of the scheduler that says it leads (once exactly one does).
    fn leader(&self) -> usize {
        poll_until("one leader", WAIT, || {
            let leading: Vec<usize> = (0..self.scheds.len())
                .filter(|&i| self.scheds[i].log().contains("elected leader"))
                .collect();
            (leading.len() == 1).then(|| leading[0])
        })
    }
}

/// `web` once `check` accepts it; Unavailable (no leader yet, or one taking over) is waited
/// out as clients do.
fn wait_through_failover(
    api: &DeployApi,
    what: &str,
    check: impl Fn(&Deployment) -> bool,
) -> Deployment {
    poll_until(what, WAIT, || {
        let got = api.call(api.client.clone().get(GetDeploymentRequest {
            name: "web".into(),
            ..Default::default()
        }));
        match got {
            Ok(d) => check(&d).then_some(d),
            Err(s) if s.code() == tonic::Code::Unavailable => None,
            Err(s) => panic!("get web: {s:?}"),
        }
    })
}

/// Every container id the agents report, sampled in the background until dropped: a replica
/// placed twice shows up as an id too many.
struct Sampler {
    seen: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(agents: Vec<String>) -> Self {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            while !st.load(Ordering::Relaxed) {
                for agent in &agents {
                    let listed = rt.block_on(async {
                        let mut c = AgentServiceClient::connect(agent.clone()).await.ok()?;
                        c.list_containers(ListContainersRequest {}).await.ok()
                    });
                    if let Some(listed) = listed {
                        let mut seen = s.lock().unwrap();
                        for c in listed.into_inner().containers {
                            seen.insert(c.container_id);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> BTreeSet<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_leader_dies_mid_rollout_and_another_finishes_it() {
    let etcd = EtcdCluster::start(1);
    let mut c = HaCluster::start(&etcd, "ha", 2);
    let leader = c.leader();
    let standby = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    // A standby forwards DeploymentService calls to the leader.
    let api = DeployApi::new(&c.scheds[standby].endpoint(), WAIT);
    poll_until("both nodes ready", WAIT, || {
        let nodes = api.nodes();
        (nodes.len() == 2 && nodes.iter().all(|n| n.ready)).then_some(())
    });
    assert!(api.apply(web("v1", 4)).changed);
    let d = api.wait("web", "4 ready replicas of v1", |d| all_ready(d, 4));
    assert_eq!(d.revision, 1);
    let agents: Vec<String> = c._nodes.iter().map(AgentNode::endpoint_url).collect();
    let sampler = Sampler::start(agents);

    // Roll out v2 through the other standby, and kill -9 the leader while it progresses.
    let api2 = DeployApi::new(&c.scheds[other].endpoint(), WAIT);
    let applied = api2.apply(web("v2", 4));
    assert_eq!(applied.deployment.unwrap().revision, 2);
    poll_until("the rollout under way", WAIT, || {
        let d = api2.get("web");
        d.replica_status
            .iter()
            .any(|r| r.revision == 2)
            .then_some(())
    });
    c.scheds[leader].kill9();
    let killed = Instant::now();
    let new_leader = poll_until("a new leader", WAIT, || {
        [standby, other]
            .into_iter()
            .find(|&i| c.scheds[i].log().contains("elected leader"))
    });
    let failover = killed.elapsed();
    eprintln!("leader killed -> new leader elected: {failover:?}");
    // Agents follow the new leader and the rollout completes.
    let api = DeployApi::new(&c.scheds[new_leader].endpoint(), WAIT);
    let d = wait_through_failover(&api, "v2 complete after the failover", |d| {
        d.revision == 2 && all_ready(d, 4) && d.phase == RolloutPhase::Complete as i32
    });
    eprintln!("leader killed -> rollout complete: {:?}", killed.elapsed());
    assert!(d.replica_status.iter().all(|r| r.revision == 2), "{d:?}");
    let history = api
        .call(api.client.clone().history(HistoryRequest {
            name: "web".into(),
            ..Default::default()
        }))
        .unwrap();
    let revisions: Vec<u64> = history.revisions.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, [1, 2], "no revision lost: {history:?}");
    poll_until("the v1 containers gone", WAIT, || {
        api.containers("web")
            .iter()
            .all(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.container_id.starts_with("web-2-"))
            })
            .then_some(())
    });
    // Nothing was started twice: exactly four v2 containers ever existed.
    let seen = sampler.seen();
    drop(sampler);
    let v2: Vec<&String> = seen.iter().filter(|id| id.starts_with("web-2-")).collect();
    assert_eq!(v2.len(), 4, "v2 containers seen on the agents: {v2:?}");
    // Both nodes reconnected to the new leader.
    poll_until("both nodes ready on the new leader", WAIT, || {
        let nodes = api.nodes();
        (nodes.len() == 2 && nodes.iter().all(|n| n.ready)).then_some(())
    });
    // The survivors still agree on one leader, and the dead one's standby peer forwards.
    let via_standby = DeployApi::new(
        &c.scheds[if new_leader == standby {
            other
        } else {
            standby
        }]
        .endpoint(),
        WAIT,
    );
    assert_eq!(via_standby.get("web").revision, 2);
    // The CLI given every address skips the dead one.
    let all: Vec<String> = c.scheds.iter().map(SchedulerProc::endpoint).collect();
    let out = std::process::Command::new(berth_tests::binary("berth"))
        .args(["status", "web", "-o", "json", "--scheduler", &all.join(",")])
        .env_remove("BERTH_SCHEDULER")
        .output()
        .expect("run berth status");
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status["revision"], 2, "{status}");
    api.delete("web");
    poll_until("the containers to go", WAIT, || {
        api.containers("web").is_empty().then_some(())
    });
    assert!(c.scheds[new_leader].is_running());
}

#[test]
fn a_three_member_etcd_with_one_member_down_keeps_the_control_plane_working() {
    let mut etcd = EtcdCluster::start(3);
    let c = HaCluster::start(&etcd, "ha3", 5);
    let leader = c.leader();
    let api = DeployApi::new(&c.scheds[leader].endpoint(), WAIT);
    poll_until("both nodes ready", WAIT, || {
        let nodes = api.nodes();
        (nodes.len() == 2 && nodes.iter().all(|n| n.ready)).then_some(())
    });
    assert!(api.apply(web("v1", 2)).changed);
    api.wait("web", "2 ready replicas", |d| all_ready(d, 2));

    // The first member (first in every scheduler's list) goes away.
    etcd.stop_member(0);
    let applied = api.apply(web("v2", 3));
    assert_eq!(applied.deployment.unwrap().revision, 2);
    let d = api.wait("web", "v2 with 3 replicas ready", |d| {
        d.revision == 2 && all_ready(d, 3)
    });
    assert_eq!(d.phase, RolloutPhase::Complete as i32, "{d:?}");
    // The leader kept its leadership all along: still exactly one, the same.
    assert_eq!(c.leader(), leader);
    api.delete("web");
    poll_until("the containers to go", WAIT, || {
        api.containers("web").is_empty().then_some(())
    });
}

/// A deployment larger than etcd takes in one transaction (128 writes) is placed whole: the
/// controller writes its replicas in pieces. On simulated nodes (they run nothing).
#[test]
fn hundreds_of_replicas_are_placed_on_an_etcd_store() {
    let etcd = EtcdCluster::start(1);
    let flags = etcd.scheduler_flags("many", 5);
    let sched = SchedulerProc::start_exact(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    poll_until("the scheduler to lead", WAIT, || {
        sched.log().contains("scheduler serving").then_some(())
    });
    let nodes = tokio::runtime::Runtime::new().expect("a runtime");
    let sessions = berth_tests::fake_node::Sessions::default();
    for i in 0..3 {
        nodes.spawn(berth_tests::fake_node::fake_agent(
            format!("sim-{i}-{}", std::process::id()),
            vec![sched.endpoint()],
            sessions.clone(),
        ));
    }
    let api = DeployApi::new(&sched.endpoint(), WAIT);
    poll_until("three simulated nodes ready", WAIT, || {
        let nodes = api.nodes();
        (nodes.len() == 3 && nodes.iter().all(|n| n.ready)).then_some(())
    });
    let mut spec = web("v1", 300);
    spec.readiness = None;
    spec.resources = Some(Resources {
        cpu_millis: 10,
        memory_bytes: 16 << 20,
    });
    api.apply(spec);
    // A refused transaction fails the test at once, naming itself (the store's cap, or etcd's).
    let refused = || {
        let log = sched.log();
        assert!(
            !log.contains("more than the") && !log.contains("too many operations"),
            "a transaction was refused:\n{log}"
        );
    };
    let d = api.wait("web", "300 replicas placed", |d| {
        refused();
        d.replica_status.len() == 300 && d.replica_status.iter().all(|r| !r.node.is_empty())
    });
    let ids: BTreeSet<&str> = d
        .replica_status
        .iter()
        .map(|r| r.container_id.as_str())
        .collect();
    assert_eq!(ids.len(), 300, "every replica once");
    refused();
}

/// A lone scheduler whose etcd goes away for longer than its lease stops leading (its lease
/// could not be renewed), stands by, and leads again once etcd is back: the process stays up
/// and the deployment is intact.
#[test]
fn a_leader_cut_off_from_etcd_stands_by_and_leads_again() {
    let mut etcd = EtcdCluster::start(1);
    let flags = etcd.scheduler_flags("cut", 2);
    let mut sched =
        SchedulerProc::start_exact(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    poll_until("the scheduler to lead", WAIT, || {
        sched.log().contains("scheduler serving").then_some(())
    });
    let api = DeployApi::new(&sched.endpoint(), WAIT);
    let mut spec = web("v1", 1);
    spec.readiness = None;
    api.apply(spec);

    etcd.stop_member(0);
    poll_until("the leadership to be lost", WAIT, || {
        sched.log().contains("standing by again").then_some(())
    });
    assert!(sched.is_running(), "a lost lease does not end the process");
    etcd.start_member(0);
    poll_until("it to lead again", WAIT, || {
        (sched.log().matches("scheduler serving").count() >= 2).then_some(())
    });
    let d = wait_through_failover(&api, "the deployment after etcd's return", |d| {
        d.revision == 1
    });
    assert_eq!(d.spec.unwrap().name, "web");
    assert!(sched.is_running());
}

/// A standby's dashboard answers every page with 303 to the same page on the leader's
/// dashboard; once the leader is gone and it leads, it serves the pages itself.
#[test]
fn a_standbys_dashboard_sends_visitors_to_the_leaders() {
    let etcd = EtcdCluster::start(1);
    let flags = etcd.scheduler_flags("hadash", 2);
    let http: Vec<std::net::SocketAddr> = (0..2).map(|_| free_loopback_addr()).collect();
    let mut scheds: Vec<SchedulerProc> = http
        .iter()
        .map(|addr| {
            let addr = addr.to_string();
            let mut own: Vec<&str> = flags.iter().map(String::as_str).collect();
            own.extend(["--http-listen", &addr]);
            SchedulerProc::start_exact(&own)
        })
        .collect();
    let leader = poll_until("one leader", WAIT, || {
        let leading: Vec<usize> = (0..2)
            .filter(|&i| scheds[i].log().contains("elected leader"))
            .collect();
        (leading.len() == 1).then(|| leading[0])
    });
    let standby = 1 - leader;
    poll_until("the leader's dashboard", WAIT, || {
        (http_status(http[leader], "/") == Some(200)).then_some(())
    });
    let page = "/deployments?env=default";
    let answer = poll_until("the standby's redirect", WAIT, || {
        let (status, answer) = request(http[standby], "GET", page, &[], "");
        (status == 303).then_some(answer)
    });
    let location = format!("location: http://{}{page}", http[leader]);
    assert!(answer.contains(&location), "{location} in {answer}");
    assert_eq!(request(http[leader], "GET", page, &[], "").0, 200);

    scheds[leader].kill9();
    poll_until(
        "the standby to lead and serve its own dashboard",
        WAIT,
        || (request(http[standby], "GET", page, &[], "").0 == 200).then_some(()),
    );
}
