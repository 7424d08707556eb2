//! The whole cluster end to end: a real berth-scheduler, three real agents (each node's
//! network in its own namespace, linked by a test-made fabric), real containers.

use std::time::{Duration, Instant};

use berth_proto::v1::*;
use berth_tests::agent_node::AgentNode;
use berth_tests::cluster::{DeployApi, Fabric, SchedulerProc, all_ready, httpd_spec, start_nodes};
use berth_tests::poll_until;

const IMAGE: &str = "cluster-busybox:1";
const WAIT: Duration = Duration::from_secs(90);

fn phase(e: &RolloutEvent) -> RolloutPhase {
    RolloutPhase::try_from(e.phase).unwrap()
}

fn hello(version: &str, replicas: u32) -> DeploymentSpec {
    httpd_spec("hello", IMAGE, version, replicas)
}

struct Cluster {
    sched: SchedulerProc,
    nodes: Vec<AgentNode>,
    _fabric: Fabric,
    api: DeployApi,
}

fn cluster(count: usize) -> Cluster {
    let sched = SchedulerProc::start(&["--reschedule-delay-ms", "500"]);
    let mut fabric = Fabric::new();
    let nodes = start_nodes(&sched, &mut fabric, count, "n", IMAGE);
    let api = DeployApi::new(&sched.endpoint(), WAIT);
    poll_until("every node ready", WAIT, || {
        let nodes = api.nodes();
        (nodes.len() == count && nodes.iter().all(|n| n.ready)).then_some(())
    });
    Cluster {
        sched,
        nodes,
        _fabric: fabric,
        api,
    }
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario whose steps build on each other, read top to bottom"
)]
fn deploy_scale_roll_out_with_approval_roll_back_survive_node_and_scheduler_loss() {
    let mut c = cluster(3);
    let api = &c.api;

    // Deploy: three replicas spread over the three nodes.
    let applied = api.apply(hello("v1", 3));
    assert!(applied.changed);
    let done = api.watch("hello", false);
    assert_eq!(phase(&done), RolloutPhase::Complete, "{done:?}");
    let d = api.wait("hello", "3 ready replicas", |d| all_ready(d, 3));
    let nodes: std::collections::BTreeSet<_> =
        d.replica_status.iter().map(|r| r.node.clone()).collect();
    assert_eq!(nodes.len(), 3, "spread over the nodes: {d:?}");
    // The same spec again is a no-op.
    assert!(!api.apply(hello("v1", 3)).changed);
    assert_eq!(api.get("hello").revision, 1);

    // A client on one node reaches a replica on another across the fabric.
    let from = &d.replica_status[0];
    let to = d
        .replica_status
        .iter()
        .find(|r| r.node != from.node)
        .unwrap();
    let node = c.nodes.iter().find(|n| n.name() == from.node).unwrap();
    let script = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {} 8080",
        to.ip
    );
    let body = poll_until("a request across nodes", WAIT, || {
        let out = node.exec(&from.container_id, &["sh", "-c", &script]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .last()
            .filter(|l| l.starts_with("hello"))
            .map(str::to_string)
    });
    assert_eq!(body, format!("hello-v1-from-{}", to.container_id));

    // Scale up and down.
    let mut client = api.client.clone();
    api.call(client.scale(ScaleRequest {
        name: "hello".into(),
        replicas: 5,
        ..Default::default()
    }))
    .unwrap();
    api.wait("hello", "5 ready replicas", |d| all_ready(d, 5));
    api.call(client.scale(ScaleRequest {
        name: "hello".into(),
        replicas: 2,
        ..Default::default()
    }))
    .unwrap();
    api.wait("hello", "2 ready replicas", |d| all_ready(d, 2));
    poll_until("the others to be gone from the nodes", WAIT, || {
        (api.containers("hello").len() == 2).then_some(())
    });

    // Continuous delivery: v2 waits for approval while v1 serves.
    let mut v2 = hello("v2", 2);
    v2.rollout.as_mut().unwrap().approval = Approval::Manual as i32;
    assert_eq!(api.apply(v2).deployment.unwrap().revision, 2);
    let waiting = api.watch("hello", true);
    assert_eq!(
        phase(&waiting),
        RolloutPhase::AwaitingApproval,
        "{waiting:?}"
    );
    let d = api.get("hello");
    assert!(
        d.replica_status.iter().all(|r| r.revision == 1),
        "v1 keeps serving: {d:?}"
    );
    api.call(client.approve(ApproveRequest {
        name: "hello".into(),
        ..Default::default()
    }))
    .unwrap();
    let done = api.watch("hello", false);
    assert_eq!(phase(&done), RolloutPhase::Complete, "{done:?}");
    api.wait("hello", "2 ready v2 replicas", |d| {
        all_ready(d, 2) && d.revision == 2
    });
    let err = api
        .call(client.approve(ApproveRequest {
            name: "hello".into(),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // A broken version fails fast and rolls back by itself.
    let mut broken = hello("v3", 2);
    broken.image = "cluster-busybox:does-not-exist".into();
    api.apply(broken);
    let failed = api.watch("hello", false);
    if phase(&failed) == RolloutPhase::RolledBack {
        assert!(failed.message.contains("ImagePullBackOff"), "{failed:?}");
    } else {
        // The pull fails fast: on a quick store the watch can attach only after the rollback
        // to revision 4 completed, and then reports that, naming what it rolled back from.
        assert_eq!(failed.revision, 4, "{failed:?}");
        assert_eq!(phase(&failed), RolloutPhase::Complete, "{failed:?}");
        assert!(
            failed.message.contains("rolled back from revision 3"),
            "{failed:?}"
        );
    }
    let d = api.wait("hello", "the rollback to complete", |d| {
        d.phase == RolloutPhase::Complete as i32 && all_ready(d, 2)
    });
    assert_eq!(d.revision, 4);
    assert_eq!(d.spec.as_ref().unwrap().env["VERSION"], "v2");

    // A node dies (agent and containers): its replicas are Ready elsewhere.
    let victim_name = d.replica_status[0].node.clone();
    let victim = c
        .nodes
        .iter_mut()
        .find(|n| n.name() == victim_name)
        .unwrap();
    victim.kill9();
    let _ = std::process::Command::new("pkill")
        .args([
            "-9",
            "-f",
            &format!(
                "berth-shim --id hello-.* --bundle {}",
                victim.data_dir().display()
            ),
        ])
        .status();
    let lost_at = Instant::now();
    let d = api.wait("hello", "replacements Ready on the other nodes", |d| {
        all_ready(d, 2) && d.replica_status.iter().all(|r| r.node != victim_name)
    });
    eprintln!("node loss to replacements ready: {:?}", lost_at.elapsed());
    assert_eq!(d.replica_status.len(), 2);

    // kill -9 the scheduler: every deployment and revision is still there afterwards.
    let history_before = api
        .call(client.history(HistoryRequest {
            name: "hello".into(),
            ..Default::default()
        }))
        .unwrap()
        .revisions
        .len();
    c.sched.restart();
    let api = DeployApi::new(&c.sched.endpoint(), WAIT);
    let mut client = api.client.clone();
    let history = api
        .call(client.history(HistoryRequest {
            name: "hello".into(),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(history.revisions.len(), history_before);
    let d = api.wait("hello", "hello ready after the scheduler's restart", |d| {
        all_ready(d, 2)
    });
    assert_eq!(d.revision, 4);
    // Nothing started twice: the surviving nodes run exactly the two replicas.
    let running: Vec<_> = api
        .containers("hello")
        .into_iter()
        .filter(|c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.state == ContainerState::Running as i32)
        })
        .collect();
    assert_eq!(running.len(), 2, "{running:?}");

    let _ = api.call(client.delete(DeleteDeploymentRequest {
        name: "hello".into(),
        ..Default::default()
    }));
    poll_until("the containers to go", WAIT, || {
        api.containers("hello").is_empty().then_some(())
    });
}

#[test]
fn invalid_specs_and_unknown_deployments_are_refused_with_the_field() {
    let c = cluster(1);
    let mut client = c.api.client.clone();
    let refused = |spec: DeploymentSpec| {
        c.api
            .call(client.clone().apply(ApplyRequest { spec: Some(spec) }))
            .unwrap_err()
    };
    let mut s = hello("v1", 1);
    s.image.clear();
    let e = refused(s);
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("spec.image"), "{e:?}");
    let mut s = hello("v1", 1);
    s.readiness = Some(Probe {
        check: Some(probe::Check::Tcp(TcpCheck { port: 9999 })),
        ..Default::default()
    });
    let e = refused(s);
    assert!(e.message().contains("spec.readiness.tcp.port"), "{e:?}");
    let mut s = hello("v1", 1);
    s.resources = Some(Resources {
        cpu_millis: 1_000_000,
        memory_bytes: 1,
    });
    let e = refused(s);
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("spec.resources"), "{e:?}");
    let e = c
        .api
        .call(client.get(GetDeploymentRequest {
            name: "nope".into(),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("nope"));
    let e = c
        .api
        .call(client.scale(ScaleRequest {
            name: "nope".into(),
            replicas: 1,
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    // Nothing was half-applied.
    let listed = c
        .api
        .call(client.list(ListDeploymentsRequest {
            ..Default::default()
        }))
        .unwrap();
    assert!(listed.deployments.is_empty());
}

#[test]
fn a_node_that_comes_back_has_its_stale_containers_stopped() {
    let mut c = cluster(2);
    let api = &c.api;
    api.apply(hello("v1", 2));
    let d = api.wait("hello", "2 ready replicas", |d| all_ready(d, 2));
    let nodes: std::collections::BTreeSet<_> =
        d.replica_status.iter().map(|r| r.node.clone()).collect();
    assert_eq!(nodes.len(), 2, "one on each node: {d:?}");
    // The agent dies; its container keeps running without it.
    let stale = d.replica_status[0].clone();
    let victim = c.nodes.iter_mut().find(|n| n.name() == stale.node).unwrap();
    victim.kill9();
    api.wait("hello", "both replicas on the other node", |d| {
        all_ready(d, 2) && d.replica_status.iter().all(|r| r.node != stale.node)
    });
    assert!(
        victim.container_dir(&stale.container_id).exists(),
        "the stale container still runs while its agent is away"
    );
    // Back: the stale container is stopped and removed, never counted twice.
    victim.restart();
    poll_until("the stale container to be removed", WAIT, || {
        (!victim.container_dir(&stale.container_id).exists()).then_some(())
    });
    let running: Vec<_> = api
        .containers("hello")
        .into_iter()
        .filter(|c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.state == ContainerState::Running as i32)
        })
        .collect();
    assert_eq!(running.len(), 2, "{running:?}");
    assert!(running.iter().all(|c| c.node != stale.node));
    let _ = &c.sched;
}

#[test]
fn an_approval_that_times_out_rejects_the_revision() {
    let c = cluster(1);
    let api = &c.api;
    api.apply(hello("v1", 1));
    assert_eq!(phase(&api.watch("hello", false)), RolloutPhase::Complete);
    let mut v2 = hello("v2", 1);
    let rollout = v2.rollout.as_mut().unwrap();
    rollout.approval = Approval::Manual as i32;
    rollout.approval_timeout_s = 1;
    api.apply(v2);
    // Watching through the approval: nobody approves, so the timeout rejects it.
    let ended = api.watch("hello", false);
    assert_eq!(phase(&ended), RolloutPhase::Rejected, "{ended:?}");
    let d = api.wait("hello", "v1 serving again", |d| all_ready(d, 1));
    assert_eq!(d.revision, 1);
    assert!(d.message.contains("approval timed out"), "{d:?}");
    let mut client = api.client.clone();
    let history = api
        .call(client.history(HistoryRequest {
            name: "hello".into(),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(history.revisions[1].outcome, RolloutPhase::Rejected as i32);
}

#[test]
fn a_replica_that_fits_nowhere_waits_with_the_reason_and_is_placed_when_room_appears() {
    let c = cluster(1);
    let api = &c.api;
    let mut big = hello("v1", 1);
    big.resources = Some(Resources {
        cpu_millis: 1500,
        memory_bytes: 32 << 20,
    });
    api.apply(big);
    api.wait("hello", "the big replica ready", |d| all_ready(d, 1));
    let mut other = hello("v1", 1);
    other.name = "other".into();
    other.resources = Some(Resources {
        cpu_millis: 1000,
        memory_bytes: 32 << 20,
    });
    api.apply(other);
    let pending = api.wait("other", "a pending replica with its reason", |d| {
        d.replica_status
            .iter()
            .any(|r| r.node.is_empty() && r.reason.contains("insufficient cpu"))
    });
    assert!(
        pending.replica_status[0]
            .reason
            .starts_with("0/1 nodes are available"),
        "{pending:?}"
    );
    // Room appears: the pending replica is placed and runs.
    let mut client = api.client.clone();
    api.call(client.delete(DeleteDeploymentRequest {
        name: "hello".into(),
        ..Default::default()
    }))
    .unwrap();
    api.wait("other", "the replica placed once there is room", |d| {
        all_ready(d, 1)
    });
}
