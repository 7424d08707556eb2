//! The cluster's event stream end to end, against real schedulers (redb, and etcd for the
//! failover), a real agent and the real `berth`: a container's state changes are events; a
//! stream cut and resumed after its last revision misses and repeats nothing; a consumer too
//! slow for the live stream is dropped with the revision to resume from while the log goes on
//! being written; and events written before a failover keep their revisions on the new leader,
//! with `berth events --follow` carrying on through it by itself.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::v1::event_service_client::EventServiceClient;
use berth_proto::v1::*;
use berth_tests::cluster::{DeployApi, Fabric, SchedulerProc, all_ready, httpd_spec, start_nodes};
use berth_tests::etcd::EtcdCluster;
use berth_tests::{poll_until, pyvenv, require_root};
use tonic::transport::{Channel, Endpoint};

const IMAGE: &str = "evt-busybox:1";
const WAIT: Duration = Duration::from_secs(90);

fn client(api: &DeployApi, endpoint: &str) -> EventServiceClient<Channel> {
    let channel = api
        .block_on(
            Endpoint::from_shared(endpoint.to_string())
                .unwrap()
                .connect(),
        )
        .expect("connect to the scheduler");
    EventServiceClient::new(channel)
}

fn open(
    api: &DeployApi,
    client: &EventServiceClient<Channel>,
    since: u64,
) -> tonic::Streaming<Event> {
    let req = EventsRequest {
        since_revision: since,
        follow: true,
        ..Default::default()
    };
    api.block_on(client.clone().events(req))
        .expect("open the event stream")
        .into_inner()
}

/// Reads `stream` up to and including the first event `done` accepts.
fn read_until(
    api: &DeployApi,
    stream: &mut tonic::Streaming<Event>,
    what: &str,
    done: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut read = Vec::new();
    loop {
        let next = api.block_on(async { tokio::time::timeout(WAIT, stream.message()).await });
        let event = match next {
            Ok(Ok(Some(event))) => event,
            other => panic!("waiting for {what}: {other:?}; read so far: {read:#?}"),
        };
        let last = done(&event);
        read.push(event);
        if last {
            return read;
        }
    }
}

/// Every kept event after `since` (no follow), through a standby's or a new leader's
/// "retry" (Unavailable).
fn kept(api: &DeployApi, client: &EventServiceClient<Channel>, since: u64) -> Vec<Event> {
    poll_until("the kept events", WAIT, || {
        let req = EventsRequest {
            since_revision: since,
            ..Default::default()
        };
        let read = api.block_on(async {
            let mut stream = client.clone().events(req).await?.into_inner();
            let mut all = Vec::new();
            while let Some(e) = stream.message().await? {
                all.push(e);
            }
            Ok::<_, tonic::Status>(all)
        });
        match read {
            Ok(all) => Some(all),
            Err(status) if status.code() == tonic::Code::Unavailable => None,
            Err(status) => panic!("reading the events: {status:?}"),
        }
    })
}

fn revisions(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

fn is(e: &Event, kind: EventKind) -> bool {
    e.kind == kind as i32
}

/// A refused Delete (no such deployment): an audit entry, and so an event, and nothing else.
fn refused_delete(api: &DeployApi, name: &str) {
    poll_until("a Delete the leader answers", WAIT, || {
        let req = DeleteDeploymentRequest {
            name: name.into(),
            ..Default::default()
        };
        match api.call(api.client.clone().delete(req)) {
            Err(s) if s.code() == tonic::Code::NotFound => Some(()),
            // No leader yet, or a forward cut by the leader's death: clients retry.
            Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled) => None,
            other => panic!("delete {name}: {other:?}"),
        }
    });
}

#[test]
fn container_states_are_events_and_a_resumed_stream_misses_and_repeats_nothing() {
    require_root();
    let sched = SchedulerProc::start(&[]);
    let mut fabric = Fabric::new();
    let nodes = start_nodes(&sched, &mut fabric, 1, "evt", IMAGE);
    let node = nodes[0].name().to_string();
    let api = DeployApi::new(&sched.endpoint(), WAIT);
    let events = client(&api, &sched.endpoint());

    let mut first = open(&api, &events, 0);
    let mut seen = read_until(&api, &mut first, "the node ready", |e| {
        is(e, EventKind::NodeReady) && e.node == node
    });
    api.apply(httpd_spec("web", IMAGE, "v1", 1));
    seen.extend(read_until(&api, &mut first, "web's replica ready", |e| {
        is(e, EventKind::Container) && e.deployment == "web" && e.state == "running" && e.ready
    }));
    let running = seen.last().unwrap().clone();
    assert_eq!(running.node, node);
    assert_eq!(running.environment, "default");
    assert!(
        seen.iter()
            .any(|e| is(e, EventKind::Audit) && e.action == "apply" && e.deployment == "web"),
        "the Apply is an event: {seen:#?}"
    );
    // A disconnect; the cluster goes on meanwhile.
    drop(first);
    let last = running.revision;
    poll_until("a Scale that does not race the control loop", WAIT, || {
        let scale = ScaleRequest {
            name: "web".into(),
            replicas: 2,
            ..Default::default()
        };
        match api.call(api.client.clone().scale(scale)) {
            Ok(_) => Some(()),
            // "the state changed while updating deployment web; retry"
            Err(s) if s.code() == tonic::Code::Aborted => None,
            Err(s) => panic!("scale: {s:?}"),
        }
    });
    api.wait("web", "2 replicas ready", |d| all_ready(d, 2));

    let mut second = open(&api, &events, last);
    let after = read_until(&api, &mut second, "web's rollout at 2/2 ready", |e| {
        is(e, EventKind::Rollout) && e.deployment == "web" && e.message.contains("2/2 ready")
    });
    assert_eq!(after[0].revision, last + 1, "resumed right after {last}");
    assert!(
        after
            .iter()
            .any(|e| is(e, EventKind::Audit) && e.action == "scale")
    );
    let other = after
        .iter()
        .find(|e| is(e, EventKind::Container) && e.ready && e.container_id != running.container_id)
        .expect("the second replica's ready event");
    assert_eq!(other.state, "running");

    let got: Vec<Event> = seen.into_iter().chain(after).collect();
    let expected: Vec<u64> = (1..=got.last().unwrap().revision).collect();
    assert_eq!(revisions(&got), expected, "no event lost or repeated");
    let log = kept(&api, &events, 0);
    assert_eq!(&log[..got.len()], &got[..], "the stream is the log");

    // The CLI lists the same log (-o json: an array), and filters by environment.
    let out = sched.berth(&["events", "-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<u64> = listed
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(&listed[..got.len()], &expected[..]);
    let since = last.to_string();
    let out = sched
        .berth(&[
            "events", "--since", &since, "--env", "default", "-o", "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!listed.is_empty());
    for e in &listed {
        assert!(e["revision"].as_u64().unwrap() > last, "{e}");
        assert_eq!(e["environment"], "default", "{e}");
    }
    let out = sched
        .berth(&["events", "--since", "999999"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("ahead of the event log"),
        "{err}"
    );
}

#[test]
fn a_slow_consumer_is_dropped_naming_where_to_resume_and_resumes_without_loss() {
    require_root();
    // A live tail of 8 events; the slow client takes 1 KiB before it stops reading.
    let sched = SchedulerProc::start(&["--events-buffer", "8"]);
    let api = DeployApi::new(&sched.endpoint(), WAIT);
    let slow_channel = api
        .block_on(
            Endpoint::from_shared(sched.endpoint())
                .unwrap()
                .initial_stream_window_size(1024)
                .connect(),
        )
        .expect("connect");
    let mut slow = api
        .block_on(EventServiceClient::new(slow_channel).events(EventsRequest {
            follow: true,
            ..Default::default()
        }))
        .expect("open the slow stream")
        .into_inner();
    // Far more than the slow client's window, the stream's buffers and the live tail hold;
    // the scheduler writes them all the same: a slow reader never holds the log back.
    const N: u64 = 600;
    for i in 0..N {
        refused_delete(&api, &format!("ghost-{i}"));
    }
    let fast = client(&api, &sched.endpoint());
    let log = poll_until("every event written", WAIT, || {
        let log = kept(&api, &fast, 0);
        (log.len() as u64 >= N).then_some(log)
    });
    assert_eq!(revisions(&log), (1..=log.len() as u64).collect::<Vec<_>>());

    let mut got = Vec::new();
    let status = loop {
        match api.block_on(async { tokio::time::timeout(WAIT, slow.message()).await }) {
            Ok(Ok(Some(e))) => got.push(e),
            Ok(Err(status)) => break status,
            other => panic!("the slow stream should end with an error: {other:?}"),
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let last = got.last().expect("some events before the drop").revision;
    assert!(last < N, "dropped before the end: {last}");
    assert_eq!(revisions(&got), (1..=last).collect::<Vec<_>>());
    assert!(
        status.message().contains("slow consumer")
            && status.message().contains(&format!("--since {last}")),
        "{status:?}"
    );
    let rest = kept(&api, &fast, last);
    let all: Vec<Event> = got.into_iter().chain(rest).collect();
    assert_eq!(
        all,
        log[..all.len()],
        "resumed after {last}: nothing lost or repeated"
    );
    assert_eq!(all.len(), log.len());
    python_reads_resumes_and_follows(&sched);
}

/// tests/python/events_client.py against `sched`: the same log from another language.
fn python_reads_resumes_and_follows(sched: &SchedulerProc) {
    let (mut client, _stubs) = pyvenv::client("events_client.py");
    let out = client
        .args(["--scheduler", &sched.address()])
        .output()
        .expect("starting the python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "events_client.py failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "numbered without gaps",
        "resumed after",
        "followed live event",
        "refused",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
}

/// `berth events --follow -o json` as a child whose lines are collected.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(endpoints: &str) -> Self {
        let mut child = std::process::Command::new(berth_tests::binary("berth"))
            .args(["events", "--follow", "-o", "json", "--scheduler", endpoints])
            .env_remove("BERTH_SCHEDULER")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start berth events --follow");
        let collect = |from: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let into = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(from).lines().map_while(Result::ok) {
                    into.lock().unwrap().push(line);
                }
            });
            lines
        };
        let lines = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            lines,
            stderr,
        }
    }

    fn revisions(&self) -> Vec<u64> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                v["revision"].as_u64().expect("a revision")
            })
            .collect()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn events_keep_their_revisions_across_a_failover_and_a_follower_carries_on() {
    require_root();
    let etcd = EtcdCluster::start(1);
    let flags = etcd.scheduler_flags("events", 2);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut scheds: Vec<SchedulerProc> =
        (0..2).map(|_| SchedulerProc::start_exact(&flags)).collect();
    let leading = |scheds: &[SchedulerProc], times: usize| {
        poll_until("a leader", WAIT, || {
            (0..scheds.len()).find(|&i| scheds[i].log().matches("elected leader").count() >= times)
        })
    };
    let leader = leading(&scheds, 1);
    let standby = 1 - leader;
    let endpoints: Vec<String> = scheds.iter().map(SchedulerProc::endpoint).collect();
    // The follower knows both; it may start on the standby, which forwards to the leader.
    let mut follower = Follower::start(&endpoints.join(","));
    let api = DeployApi::new(&endpoints[standby], WAIT);
    for i in 0..5 {
        refused_delete(&api, &format!("before-{i}"));
    }
    let events = client(&api, &endpoints[standby]);
    // Published as the calls return, written just after.
    let before = poll_until("the first events written", WAIT, || {
        let before = kept(&api, &events, 0);
        (before.len() >= 5).then_some(before)
    });

    scheds[leader].kill9();
    leading(&scheds[standby..=standby], 1);
    for i in 0..3 {
        refused_delete(&api, &format!("after-{i}"));
    }
    let after = poll_until("the new leader's events", WAIT, || {
        let after = kept(&api, &events, 0);
        (after.len() >= before.len() + 3).then_some(after)
    });
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "the same events with the same revisions"
    );
    assert_eq!(
        revisions(&after),
        (1..=after.len() as u64).collect::<Vec<_>>()
    );
    let newest = after.last().unwrap();
    assert!(newest.message.contains("after-2"), "{newest:?}");

    let expected = revisions(&after);
    poll_until("the follower to show every event", WAIT, || {
        if let Ok(Some(status)) = follower.child.try_wait() {
            let stderr = follower.stderr.lock().unwrap().join("\n");
            panic!("berth events --follow exited ({status}): {stderr}");
        }
        (follower.revisions().len() >= expected.len()).then_some(())
    });
    let shown = follower.revisions();
    let stderr = follower.stderr.lock().unwrap().join("\n");
    assert_eq!(
        &shown[..expected.len()],
        &expected[..],
        "once each, in order, through the failover (stderr: {stderr})"
    );
    assert!(
        stderr.contains("resuming after revision"),
        "the follower's stream was cut by the failover and resumed: {stderr}"
    );
}
