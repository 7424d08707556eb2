//! The etcd store against real etcd processes on loopback ports: the store conformance suite,
//! compaction, a watch that outlives its member restarting, a cluster with a member down, and
//! the `etcd://` URL parser.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_scheduler::store::conformance::StoreFactory;
use berth_scheduler::store::etcd::EtcdStore;
use berth_scheduler::store::{
    Expect, KeyValue, Op, Revision, Store, StoreError, WatchEvent, WatchStream,
};
use berth_tests::etcd::EtcdCluster;
use futures::StreamExt;
use tokio::sync::OnceCell;

/// Starts a cluster without holding up the runtime's other tasks.
fn start_cluster(members: usize) -> EtcdCluster {
    tokio::task::block_in_place(|| EtcdCluster::start(members))
}

async fn connect(endpoints: &[String], prefix: &str) -> EtcdStore {
    EtcdStore::connect(endpoints, prefix)
        .await
        .unwrap_or_else(|e| panic!("connect to etcd at {endpoints:?}: {e}"))
}

// ---- conformance ----

/// An [`EtcdStore`] for the conformance suite. With a history bound, every write is followed
/// by an etcd compaction keeping only the last `history` revisions.
#[derive(Debug)]
struct TestStore {
    store: EtcdStore,
    history: Option<History>,
}

struct History {
    revisions: u64,
    client: tokio::sync::Mutex<etcd_client::Client>,
    compacted: AtomicU64,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("revisions", &self.revisions)
            .field("compacted", &self.compacted)
            .finish_non_exhaustive()
    }
}

impl TestStore {
    async fn wrote(&self, result: Result<Revision, StoreError>) -> Result<Revision, StoreError> {
        let revision = result?;
        if let Some(history) = &self.history {
            let keep_from = (revision + 1).saturating_sub(history.revisions);
            if keep_from > history.compacted.load(Ordering::SeqCst) {
                history
                    .client
                    .lock()
                    .await
                    .compact(
                        i64::try_from(keep_from).expect("an etcd revision fits i64"),
                        None,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("compact etcd at {keep_from}: {e}"));
                history.compacted.store(keep_from, Ordering::SeqCst);
            }
        }
        Ok(revision)
    }
}

#[async_trait::async_trait]
impl Store for TestStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.store.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.store.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<Revision, StoreError> {
        self.wrote(self.store.put(key, value, expect).await).await
    }
    async fn delete(&self, key: &str, expect: Expect) -> Result<Revision, StoreError> {
        self.wrote(self.store.delete(key, expect).await).await
    }
    async fn txn(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        self.wrote(self.store.txn(ops).await).await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.store.watch(prefix, after).await
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.store.revision().await
    }
}

/// One etcd per factory, started at the first store it makes and killed with it; the
/// macro makes a factory per test, so each test (each nextest process) has its own etcd.
/// Every store gets a prefix of its own.
struct EtcdFactory {
    cluster: OnceCell<EtcdCluster>,
    stores: AtomicU64,
    owns_revisions: bool,
}

impl EtcdFactory {
    /// `owns_revisions`: whether the suite may check exact revisions. True is only right
    /// because no one else writes to this factory's etcd; a shared etcd is false.
    fn new(owns_revisions: bool) -> Self {
        Self {
            cluster: OnceCell::new(),
            stores: AtomicU64::new(0),
            owns_revisions,
        }
    }

    async fn endpoints(&self) -> Vec<String> {
        self.cluster
            .get_or_init(|| async { start_cluster(1) })
            .await
            .endpoints()
    }

    async fn store(&self) -> EtcdStore {
        let n = self.stores.fetch_add(1, Ordering::Relaxed);
        connect(&self.endpoints().await, &format!("/conformance/{n:04}")).await
    }
}

impl StoreFactory for EtcdFactory {
    type Store = TestStore;

    async fn fresh(&self) -> TestStore {
        TestStore {
            store: self.store().await,
            history: None,
        }
    }

    async fn with_history(&self, revisions: u64) -> Option<TestStore> {
        let store = self.store().await;
        let client = etcd_client::Client::connect(self.endpoints().await, None)
            .await
            .expect("an etcd client for compaction");
        Some(TestStore {
            store,
            history: Some(History {
                revisions,
                client: tokio::sync::Mutex::new(client),
                compacted: AtomicU64::new(0),
            }),
        })
    }

    fn owns_revisions(&self) -> bool {
        self.owns_revisions
    }
}

/// As the scheduler uses etcd: revisions shared with whoever else writes there.
mod conformance {
    berth_scheduler::store_conformance_tests!(super::EtcdFactory::new(false));
}

/// The same cases with exact revision checks, true here since each test has its own etcd:
/// etcd's revisions behave as the contract says (a failed or empty write advances nothing).
mod conformance_exact_revisions {
    berth_scheduler::store_conformance_tests!(super::EtcdFactory::new(true));
}

// ---- helpers ----

const WAIT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(500);

async fn next_item(w: &mut WatchStream) -> Option<Result<WatchEvent, StoreError>> {
    tokio::time::timeout(WAIT, w.next())
        .await
        .unwrap_or_else(|_| panic!("no watch item within {WAIT:?}"))
}

async fn next_event(w: &mut WatchStream) -> WatchEvent {
    match next_item(w).await {
        Some(Ok(event)) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

async fn expect_quiet(w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(QUIET, w.next()).await {
        panic!("unexpected watch item {item:?}");
    }
}

fn put_event(
    key: &str,
    value: &[u8],
    create_revision: Revision,
    mod_revision: Revision,
) -> WatchEvent {
    WatchEvent::Put(KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    })
}

fn put_op(key: &str, value: &[u8], expect: Expect) -> Op {
    Op::Put {
        key: key.to_owned(),
        value: value.to_vec(),
        expect,
    }
}

// ---- compaction ----

/// A watch from a compacted revision fails with Compacted naming the revision asked for and
/// etcd's compaction revision; from the compaction revision on, history is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_is_compacted() {
    let cluster = start_cluster(1);
    let store = connect(&cluster.endpoints(), "/compact").await;
    let r0 = store.revision().await.unwrap();
    let mut revs = Vec::new();
    for i in 0..6u8 {
        revs.push(store.put("/k", vec![i], Expect::Any).await.unwrap());
    }
    let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    client
        .compact(
            i64::try_from(revs[3]).expect("an etcd revision fits i64"),
            None,
        )
        .await
        .unwrap();

    for after in [r0, revs[1]] {
        let item = match store.watch("/", after).await {
            Err(e) => Some(Err(e)),
            Ok(mut w) => {
                let item = next_item(&mut w).await;
                assert!(
                    next_item(&mut w).await.is_none(),
                    "the stream ends after Compacted"
                );
                item
            }
        };
        match item {
            Some(Err(StoreError::Compacted { requested, oldest })) => {
                assert_eq!((requested, oldest), (after, revs[3]), "watch after {after}")
            }
            other => panic!("watch after {after}: expected Compacted, got {other:?}"),
        }
    }
    let mut w = store.watch("/", revs[3] - 1).await.unwrap();
    for (i, &r) in revs.iter().enumerate().skip(3) {
        assert_eq!(
            next_event(&mut w).await,
            put_event(
                "/k",
                &[u8::try_from(i).expect("a handful of writes")],
                revs[0],
                r
            ),
            "kept history event {i}"
        );
    }
    expect_quiet(&mut w).await;
}

// ---- failures ----

/// A watch survives the restart of its only member: what was written before and after the
/// restart arrives once each, in order, with no duplicates; while the member is down, reads
/// are Unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_its_member_restarts() {
    let mut cluster = start_cluster(1);
    let store = connect(&cluster.endpoints(), "/restart").await;
    let r0 = store.revision().await.unwrap();
    let mut w = store.watch("/w/", r0).await.unwrap();
    let ra = store
        .put("/w/a", b"1".to_vec(), Expect::Absent)
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await, put_event("/w/a", b"1", ra, ra));

    tokio::task::block_in_place(|| cluster.stop_member(0));
    match store.get("/w/a").await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("a get with the only member down must be Unavailable, got {other:?}"),
    }
    match store.put("/w/x", b"x".to_vec(), Expect::Any).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("a put with the only member down must be Unavailable, got {other:?}"),
    }
    tokio::task::block_in_place(|| cluster.start_member(0));

    // The data survived the SIGKILL.
    let got = store.get("/w/a").await.unwrap();
    assert_eq!(
        got.map(|kv| (kv.value, kv.mod_revision)),
        Some((b"1".to_vec(), ra))
    );
    let rb = store
        .put("/w/b", b"2".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let ra2 = store
        .put("/w/a", b"3".to_vec(), Expect::Revision(ra))
        .await
        .unwrap();
    let rd = store.delete("/w/b", Expect::Revision(rb)).await.unwrap();
    assert!(ra < rb && rb < ra2 && ra2 < rd, "revisions increase");
    assert_eq!(next_event(&mut w).await, put_event("/w/b", b"2", rb, rb));
    assert_eq!(next_event(&mut w).await, put_event("/w/a", b"3", ra, ra2));
    assert_eq!(
        next_event(&mut w).await,
        WatchEvent::Delete {
            key: "/w/b".into(),
            mod_revision: rd
        }
    );
    expect_quiet(&mut w).await;
}

/// With one member of three down (and first in the store's list), every operation works
/// through the others; a watch pinned to the member that dies resumes on another one without
/// losing or repeating events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_with_one_down() {
    let mut cluster = start_cluster(3);
    let endpoints = cluster.endpoints();
    // Pinned to member 0, the first listed.
    let store = connect(&endpoints, "/three").await;
    let r0 = store.revision().await.unwrap();
    let mut w = store.watch("/t/", r0).await.unwrap();
    let r1 = store
        .put("/t/a", b"a".to_vec(), Expect::Absent)
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await, put_event("/t/a", b"a", r1, r1));

    tokio::task::block_in_place(|| cluster.stop_member(0));
    assert!(!cluster.is_healthy(0), "member 0 is down");

    // A store made now, the dead member first in its list.
    let fresh = connect(&endpoints, "/three").await;
    for (name, s) in [("the old store", &store), ("a new store", &fresh)] {
        for round in 0..5 {
            let got = s
                .get("/t/a")
                .await
                .unwrap_or_else(|e| panic!("{name}: get: {e}"));
            assert_eq!(
                got.map(|kv| kv.mod_revision),
                Some(r1),
                "{name}: get round {round}"
            );
        }
    }
    let r2 = store
        .put("/t/b", b"b".to_vec(), Expect::Absent)
        .await
        .expect("a put with member 0 down");
    let r3 = fresh
        .txn(vec![
            put_op("/t/a", b"a2", Expect::Revision(r1)),
            put_op("/t/c", b"c", Expect::Absent),
        ])
        .await
        .expect("a txn with member 0 down");
    match store
        .put("/t/a", b"late".to_vec(), Expect::Revision(r1))
        .await
    {
        Err(StoreError::Conflict {
            key,
            expected,
            found,
        }) => assert_eq!(
            (key.as_str(), expected, found),
            ("/t/a", Expect::Revision(r1), Some(r3))
        ),
        other => panic!("a stale put must conflict, got {other:?}"),
    }
    let (kvs, at) = fresh.list("/t/").await.expect("a list with member 0 down");
    assert!(at >= r3);
    assert_eq!(
        kvs.iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
            .collect::<Vec<_>>(),
        [("/t/a", &b"a2"[..]), ("/t/b", b"b"), ("/t/c", b"c")]
    );

    // The watch that was on member 0 resumed elsewhere; a new one starts on a live member.
    let mut w2 = fresh
        .watch("/t/", r1)
        .await
        .expect("a watch with member 0 down");
    for w in [&mut w, &mut w2] {
        assert_eq!(next_event(w).await, put_event("/t/b", b"b", r2, r2));
        assert_eq!(next_event(w).await, put_event("/t/a", b"a2", r1, r3));
        assert_eq!(next_event(w).await, put_event("/t/c", b"c", r3, r3));
    }
    let r4 = fresh.delete("/t/c", Expect::Any).await.unwrap();
    let gone = WatchEvent::Delete {
        key: "/t/c".into(),
        mod_revision: r4,
    };
    assert_eq!(next_event(&mut w).await, gone);
    assert_eq!(next_event(&mut w2).await, gone);
    expect_quiet(&mut w).await;
    expect_quiet(&mut w2).await;

    // Member 0 comes back and catches up; the stores keep working.
    tokio::task::block_in_place(|| cluster.start_member(0));
    let only0 = connect(&[cluster.endpoint(0)], "/three").await;
    assert_eq!(only0.get("/t/c").await.unwrap(), None, "member 0 caught up");
    assert!(store.revision().await.unwrap() >= r4);
}

/// A watch whose member is down while its history is compacted away ends with Compacted
/// naming the last revision it delivered, once it can resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_past_compacted_history_is_compacted() {
    let mut cluster = start_cluster(3);
    // The watching store knows member 0 only, so it cannot resume before member 0 is back.
    let watcher = connect(&[cluster.endpoint(0)], "/resume").await;
    let writer = connect(&cluster.endpoints()[1..], "/resume").await;
    let r1 = writer
        .put("/q/a", b"1".to_vec(), Expect::Any)
        .await
        .unwrap();
    let mut w = watcher.watch("/q/", r1 - 1).await.unwrap();
    assert_eq!(next_event(&mut w).await, put_event("/q/a", b"1", r1, r1));

    tokio::task::block_in_place(|| cluster.stop_member(0));
    let r2 = writer
        .put("/q/a", b"2".to_vec(), Expect::Any)
        .await
        .unwrap();
    let r3 = writer
        .put("/q/b", b"3".to_vec(), Expect::Any)
        .await
        .unwrap();
    let mut client = etcd_client::Client::connect(&cluster.endpoints()[1..], None)
        .await
        .unwrap();
    client
        .compact(i64::try_from(r3).expect("an etcd revision fits i64"), None)
        .await
        .unwrap();
    assert!(r2 < r3);
    tokio::task::block_in_place(|| cluster.start_member(0));

    match next_item(&mut w).await {
        Some(Err(StoreError::Compacted { requested, oldest })) => {
            assert_eq!((requested, oldest), (r1, r3))
        }
        other => panic!("expected Compacted after resuming, got {other:?}"),
    }
    assert!(
        next_item(&mut w).await.is_none(),
        "the stream ends after Compacted"
    );
}

/// Concurrent writers through one store with a member down: every write lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_with_a_member_down() {
    let mut cluster = start_cluster(3);
    tokio::task::block_in_place(|| cluster.stop_member(1));
    // The dead member in the middle of the list.
    let store = Arc::new(connect(&cluster.endpoints(), "/concurrent").await);
    let tasks: Vec<_> = (0..4u32)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..25u32 {
                    store
                        .put(
                            &format!("/c/{t}/{i:02}"),
                            i.to_le_bytes().to_vec(),
                            Expect::Absent,
                        )
                        .await
                        .unwrap_or_else(|e| panic!("writer {t} put {i}: {e}"));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (kvs, _) = store.list("/c/").await.unwrap();
    assert_eq!(kvs.len(), 100);
    let mut revisions: Vec<Revision> = kvs.iter().map(|kv| kv.mod_revision).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 100, "each write its own revision");
}

// ---- URLs ----

#[test]
fn parse_url_accepts_endpoint_lists() {
    assert_eq!(
        EtcdStore::parse_url("etcd://127.0.0.1:2379").unwrap(),
        ["127.0.0.1:2379"]
    );
    assert_eq!(
        EtcdStore::parse_url("etcd://a.example:2379,10.0.0.2:22379,[::1]:2379").unwrap(),
        ["a.example:2379", "10.0.0.2:22379", "[::1]:2379"]
    );
}

#[test]
fn parse_url_rejects_bad_input_naming_it() {
    let cases = [
        ("", "etcd://"),
        ("127.0.0.1:2379", "etcd://"),
        ("http://127.0.0.1:2379", "etcd://"),
        ("etcd://", "no endpoints"),
        ("etcd://127.0.0.1", "no port"),
        ("etcd://127.0.0.1:", "port"),
        ("etcd://127.0.0.1:abc", "port \"abc\""),
        ("etcd://127.0.0.1:0", "port \"0\""),
        ("etcd://127.0.0.1:65536", "port \"65536\""),
        ("etcd://:2379", "no host"),
        ("etcd://a:1,,b:2", "endpoint 2 is empty"),
        ("etcd://a:1,", "endpoint 2 is empty"),
        ("etcd://a:1/path", "'/'"),
        ("etcd://user@a:1", "'@'"),
        ("etcd://a :1", "' '"),
        ("etcd://::1:2379", "brackets"),
        ("etcd://a:1,a:1", "listed twice"),
    ];
    for (url, reason) in cases {
        match EtcdStore::parse_url(url) {
            Ok(endpoints) => panic!("{url:?} must be rejected, got {endpoints:?}"),
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains(&format!("{url:?}")),
                    "the error for {url:?} must name it: {message}"
                );
                assert!(
                    message.contains(reason),
                    "the error for {url:?} must say {reason:?}: {message}"
                );
            }
        }
    }
}
