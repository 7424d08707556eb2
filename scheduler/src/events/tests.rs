//! The event log on a real redb store: numbering, retention, resuming, and a slow reader
//! dropped with the revision to resume from while publishing never waits.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1::{Event, EventKind, EventsRequest};

use super::*;
use crate::store::redb::RedbStore;

fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
    (dir, store)
}

fn node_event(i: usize, env: &str) -> Event {
    Event {
        kind: EventKind::NodeReady.into(),
        node: format!("n{i}"),
        environment: env.into(),
        ..Default::default()
    }
}

/// Waits until the log's latest revision is `n`.
async fn written(log: &EventLog, n: u64) {
    for _ in 0..500 {
        if log.latest().await.unwrap() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the log never reached revision {n}");
}

async fn drain(feed: &mut read::Feed) -> Vec<Result<Event, SchedError>> {
    let mut out = Vec::new();
    while let Some(item) = feed.recv().await {
        out.push(item);
    }
    out
}

fn revisions(items: &[Result<Event, SchedError>]) -> Vec<u64> {
    items
        .iter()
        .map(|i| i.as_ref().expect("an event").revision)
        .collect()
}

#[tokio::test]
async fn numbered_without_gaps_kept_within_retention_and_resumable() {
    let (_dir, store) = store();
    let settings = Settings {
        retention: 5,
        buffer: 16,
    };
    let (publisher, log) = start(store, settings);
    for i in 0..8 {
        publisher.publish(node_event(i, if i % 2 == 0 { "default" } else { "" }));
    }
    written(&log, 8).await;
    let kept = log.after(0).await.unwrap();
    assert_eq!(
        kept.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [4, 5, 6, 7, 8]
    );
    assert!(kept.iter().all(|e| e.at_ms > 0), "stamped when published");
    assert_eq!(
        log.after(5).await.unwrap().first().map(|e| e.revision),
        Some(6)
    );
    let gone = log.after(1).await.unwrap_err().to_string();
    assert!(
        gone.contains("events 2 to 3 are no longer kept") && gone.contains("--since 3"),
        "{gone}"
    );
    let ahead = log.after(9).await.unwrap_err().to_string();
    assert!(ahead.contains("ahead of the event log"), "{ahead}");
    let req = EventsRequest {
        since_revision: 5,
        environment: "default".into(),
        ..Default::default()
    };
    let mut feed = log.subscribe(&req).await.unwrap();
    assert_eq!(revisions(&drain(&mut feed).await), [7], "only default's");
}

#[tokio::test]
async fn a_deployments_events_are_its_own_newest_first_and_bounded() {
    let (_dir, store) = store();
    let (publisher, log) = start(store, Settings::default());
    for (i, (env, name)) in [
        ("default", "web"),
        ("staging", "web"),
        ("default", "api"),
        ("default", "web"),
        ("default", "web"),
    ]
    .into_iter()
    .enumerate()
    {
        publisher.publish(Event {
            kind: EventKind::Rollout.into(),
            environment: env.into(),
            deployment: name.into(),
            message: format!("step {i}"),
            ..Default::default()
        });
    }
    written(&log, 5).await;
    let of = |events: Vec<Event>| events.iter().map(|e| e.revision).collect::<Vec<_>>();
    // "" names the default environment, as everywhere else.
    assert_eq!(
        of(log.of_deployment("", "web", 50).await.unwrap()),
        [5, 4, 1]
    );
    assert_eq!(
        of(log.of_deployment("default", "web", 2).await.unwrap()),
        [5, 4]
    );
    assert_eq!(
        of(log.of_deployment("staging", "web", 50).await.unwrap()),
        [2]
    );
    assert!(
        log.of_deployment("default", "nope", 50)
            .await
            .unwrap()
            .is_empty()
    );
    // After the first read filled the leader's memory from the store, the writer keeps it
    // current: a new event shows without another read of the log.
    publisher.publish(Event {
        kind: EventKind::Rollout.into(),
        environment: "default".into(),
        deployment: "web".into(),
        message: "step 5".into(),
        ..Default::default()
    });
    written(&log, 6).await;
    assert_eq!(
        of(log.of_deployment("", "web", 50).await.unwrap()),
        [6, 5, 4, 1]
    );
}

/// Memory holds the newest RECENT events once each, whatever order fill and writer run in.
#[test]
fn recent_keeps_the_newest_once_each() {
    let event = |revision| Event {
        revision,
        ..Default::default()
    };
    let mut recent = std::collections::VecDeque::new();
    super::remember(&mut recent, (1..=3).map(event));
    super::remember(&mut recent, (2..=4).map(event));
    let revisions: Vec<u64> = recent.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, [1, 2, 3, 4]);
    let more = super::RECENT as u64 + 10;
    super::remember(&mut recent, (5..=more).map(event));
    assert_eq!(recent.len(), super::RECENT);
    assert_eq!(recent.back().map(|e| e.revision), Some(more));
    assert_eq!(
        recent.front().map(|e| e.revision),
        Some(more - super::RECENT as u64 + 1)
    );
}

#[tokio::test]
async fn a_follower_gets_kept_then_live_events_once_each() {
    let (_dir, store) = store();
    let (publisher, log) = start(store, Settings::default());
    for i in 0..3 {
        publisher.publish(node_event(i, ""));
    }
    written(&log, 3).await;
    let req = EventsRequest {
        since_revision: 1,
        follow: true,
        ..Default::default()
    };
    let mut feed = log.subscribe(&req).await.unwrap();
    for i in 3..6 {
        publisher.publish(node_event(i, ""));
    }
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(feed.recv().await.expect("open").expect("an event").revision);
    }
    assert_eq!(got, [2, 3, 4, 5]);
}

#[tokio::test]
async fn a_slow_follower_is_dropped_with_where_to_resume_and_publishing_never_waits() {
    let (_dir, store) = store();
    let settings = Settings {
        retention: 10_000,
        buffer: 4,
    };
    let (publisher, log) = start(store, settings);
    let req = EventsRequest {
        follow: true,
        ..Default::default()
    };
    let mut feed = log.subscribe(&req).await.unwrap();
    // Nobody reads the feed meanwhile: every publish returns at once all the same.
    for i in 0..200 {
        publisher.publish(node_event(i, ""));
    }
    written(&log, 200).await;
    let mut got = Vec::new();
    let error = loop {
        match feed.recv().await.expect("ends with an error") {
            Ok(e) => got.push(e.revision),
            Err(e) => break e,
        }
    };
    let last = *got.last().expect("some events first");
    assert_eq!(
        got,
        (1..=last).collect::<Vec<_>>(),
        "no gap before the drop"
    );
    let SchedError::SlowConsumer { resume, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(*resume, last);
    assert!(error.to_string().contains(&format!("--since {last}")));
    assert_eq!(
        tonic::Status::from(error).code(),
        tonic::Code::ResourceExhausted
    );
    let rest = log.after(last).await.unwrap();
    assert_eq!(rest.first().map(|e| e.revision), Some(last + 1));
    assert_eq!(rest.last().map(|e| e.revision), Some(200));
}

/// The tracker publishes changes only: a node's first sight when not ready is not news (one
/// remembered from the store after a failover), a container's state, readiness or restarts,
/// and its removal; a rollout's counts.
#[tokio::test]
async fn the_tracker_publishes_changes_only() {
    use berth_proto::v1::{ContainerState, ContainerStatus, Deployment, DeploymentSpec};
    use std::collections::HashMap;

    let (_dir, store) = store();
    let (out, log) = start(store, Settings::default());
    let mut t = tracker::Tracker::default();
    t.nodes(&out, [("n1".to_string(), false), ("n2".to_string(), true)]);
    t.nodes(&out, [("n1".to_string(), true), ("n2".to_string(), true)]);
    t.nodes(&out, [("n1".to_string(), false)]);
    let status = |state: ContainerState, ready: bool| ContainerStatus {
        container_id: "web-1-abc".into(),
        deployment: "web.staging".into(),
        revision: 1,
        state: state.into(),
        ready,
        ..Default::default()
    };
    let one =
        |s: ContainerStatus| HashMap::from([("web-1-abc".to_string(), ("n1".to_string(), s))]);
    t.containers(&out, &one(status(ContainerState::Running, false)));
    t.containers(&out, &one(status(ContainerState::Running, false)));
    t.containers(&out, &one(status(ContainerState::Running, true)));
    t.containers(&out, &HashMap::new());
    let web = |ready: u32| Deployment {
        spec: Some(DeploymentSpec {
            name: "web.staging".into(),
            ..Default::default()
        }),
        revision: 2,
        replicas: 2,
        ready_replicas: ready,
        ..Default::default()
    };
    t.rollouts(&out, &[web(1)]);
    t.rollouts(&out, &[web(1)]);
    t.rollouts(&out, &[web(2)]);
    written(&log, 8).await;
    let events = log.after(0).await.unwrap();
    let said: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.node.clone() + &e.state + &e.action, e.message.clone()))
        .collect();
    assert_eq!(events.len(), 8, "{said:#?}");
    let kinds: Vec<i32> = events.iter().map(|e| e.kind).collect();
    use EventKind::*;
    assert_eq!(
        kinds,
        [
            NodeReady,
            NodeReady,
            NodeNotReady,
            Container,
            Container,
            Container,
            Rollout,
            Rollout
        ]
        .map(i32::from)
    );
    assert_eq!(events[0].node, "n2");
    let container: Vec<(&str, bool)> = events[3..6]
        .iter()
        .map(|e| (e.state.as_str(), e.ready))
        .collect();
    assert_eq!(
        container,
        [("running", false), ("running", true), ("removed", false)]
    );
    assert!(
        events[3..8]
            .iter()
            .all(|e| e.environment == "staging" && e.deployment == "web")
    );
    assert!(events[7].message.contains("2/2 ready"), "{:?}", events[7]);
}
