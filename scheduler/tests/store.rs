//! The state store: the conformance suite against [`RedbStore`] (a fresh file per case, with
//! the default watch buffer and with a one-revision buffer that makes every watch lag), and
//! what only the redb backend promises: durability across reopen, crash safety under SIGKILL,
//! one open per file, history bounds and lag recovery.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_scheduler::store::conformance::StoreFactory;
use berth_scheduler::store::redb::{RedbOptions, RedbStore};
use berth_scheduler::store::{Expect, KeyValue, Op, Store, StoreError, WatchEvent, WatchStream};
use futures::StreamExt;
use tempfile::TempDir;

/// A fresh file per store, in one temporary directory kept as long as the factory.
struct RedbFactory {
    dir: TempDir,
    count: AtomicUsize,
    options: RedbOptions,
}

impl RedbFactory {
    fn new(options: RedbOptions) -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
            count: AtomicUsize::new(0),
            options,
        }
    }

    fn open(&self, options: RedbOptions) -> RedbStore {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("state-{n}.redb"));
        RedbStore::open_with(&path, options).expect("open a fresh store")
    }
}

impl StoreFactory for RedbFactory {
    type Store = RedbStore;

    async fn fresh(&self) -> RedbStore {
        self.open(self.options)
    }

    async fn with_history(&self, revisions: u64) -> Option<RedbStore> {
        Some(self.open(RedbOptions {
            history: revisions,
            ..self.options
        }))
    }
}

mod conformance {
    berth_scheduler::store_conformance_tests!(super::RedbFactory::new(Default::default()));
}

/// The same cases with a watch buffer of one revision: every watch that does not keep up
/// falls back to the log, which must not lose, repeat or reorder anything.
mod conformance_lagging_watches {
    berth_scheduler::store_conformance_tests!(super::RedbFactory::new(
        berth_scheduler::store::redb::RedbOptions {
            watch_buffer: 1,
            ..Default::default()
        }
    ));
}

const WAIT: Duration = Duration::from_secs(10);

async fn next_item(w: &mut WatchStream) -> Option<Result<WatchEvent, StoreError>> {
    tokio::time::timeout(WAIT, w.next())
        .await
        .expect("a watch item in time")
}

async fn next_event(w: &mut WatchStream) -> WatchEvent {
    match next_item(w).await {
        Some(Ok(event)) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

fn put_op(key: &str, value: &[u8]) -> Op {
    Op::Put {
        key: key.to_owned(),
        value: value.to_vec(),
        expect: Expect::Any,
    }
}

/// Everything written survives closing and reopening the file: keys, values, both revisions
/// of each key, the store's revision and the watch history. New writes continue from there.
#[tokio::test]
async fn reopen_keeps_data_revision_and_history() {
    let dir = tempfile::tempdir().unwrap();
    // open creates missing parent directories.
    let path = dir.path().join("scheduler").join("state.redb");

    let (listed, revision, history) = {
        let s = RedbStore::open(&path).unwrap();
        s.put("/d/a", b"a1".to_vec(), Expect::Absent).await.unwrap();
        let ra2 = s.put("/d/a", b"a2".to_vec(), Expect::Any).await.unwrap();
        s.put("/d/b", b"b".to_vec(), Expect::Any).await.unwrap();
        s.txn(vec![
            put_op("/d/c", b"c"),
            Op::Delete {
                key: "/d/b".into(),
                expect: Expect::Any,
            },
        ])
        .await
        .unwrap();
        s.put("/d/a", b"a3".to_vec(), Expect::Revision(ra2))
            .await
            .unwrap();
        let (listed, revision) = s.list("").await.unwrap();
        assert_eq!(revision, 5);
        let mut w = s.watch("", 0).await.unwrap();
        let mut history = Vec::new();
        for _ in 0..6 {
            history.push(next_event(&mut w).await);
        }
        (listed, revision, history)
    };

    let s = RedbStore::open(&path).unwrap();
    assert_eq!(
        s.revision().await.unwrap(),
        revision,
        "revision after reopen"
    );
    assert_eq!(
        s.list("").await.unwrap(),
        (listed.clone(), revision),
        "data after reopen"
    );
    assert_eq!(
        s.get("/d/a").await.unwrap(),
        Some(KeyValue {
            key: "/d/a".into(),
            value: b"a3".to_vec(),
            create_revision: 1,
            mod_revision: 5
        })
    );
    let mut w = s.watch("", 0).await.unwrap();
    for (i, want) in history.iter().enumerate() {
        assert_eq!(
            &next_event(&mut w).await,
            want,
            "history event {i} after reopen"
        );
    }
    let r = s
        .put("/d/a", b"a4".to_vec(), Expect::Revision(5))
        .await
        .unwrap();
    assert_eq!(r, revision + 1, "the revision continues after reopen");
    assert_eq!(s.get("/d/a").await.unwrap().unwrap().create_revision, 1);
    match next_event(&mut w).await {
        WatchEvent::Put(kv) => assert_eq!((kv.value, kv.mod_revision), (b"a4".to_vec(), 6)),
        other => panic!("unexpected {other:?}"),
    }
}

/// One open handle per file: a second open is Unavailable until the first is dropped, and a
/// watch stream does not keep the file open (it ends with Unavailable when the store closes).
#[tokio::test]
async fn one_open_per_file_and_watches_end_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let s = RedbStore::open(&path).unwrap();
    match RedbStore::open(&path) {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("a second open must be Unavailable, got {other:?}"),
    }
    let mut w = s.watch("/", 0).await.unwrap();
    s.put("/k", b"v".to_vec(), Expect::Any).await.unwrap();
    assert!(matches!(next_event(&mut w).await, WatchEvent::Put(_)));
    drop(s);
    match next_item(&mut w).await {
        Some(Err(StoreError::Unavailable(_))) => {}
        other => panic!("a watch of a closed store must end with Unavailable, got {other:?}"),
    }
    assert!(next_item(&mut w).await.is_none(), "the stream ends");
    let s = RedbStore::open(&path).expect("reopen while the old watch stream still exists");
    assert_eq!(s.revision().await.unwrap(), 1);
}

/// History is bounded: a smaller window takes effect at the next write, also across reopen;
/// Compacted names the revision asked for and the oldest kept.
#[tokio::test]
async fn history_is_bounded_and_shrinks_on_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        for i in 0..20u8 {
            s.put("/h/k", vec![i], Expect::Any).await.unwrap();
        }
        let mut w = s.watch("/h/", 0).await.expect("all 20 revisions are kept");
        assert_eq!(next_event(&mut w).await.revision(), 1);
    }
    let s = RedbStore::open(&path).unwrap().with_history(5);
    let mut w = s
        .watch("/h/", 0)
        .await
        .expect("still kept until the next write");
    assert_eq!(next_event(&mut w).await.revision(), 1);
    drop(w);
    s.put("/h/k", vec![20], Expect::Any).await.unwrap();
    match s.watch("/h/", 0).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (0, 17))
        }
        other => panic!("expected Compacted, got {:?}", other.map(|_| "a stream")),
    }
    match s.watch("/h/", 15).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (15, 17))
        }
        other => panic!("expected Compacted, got {:?}", other.map(|_| "a stream")),
    }
    let mut w = s.watch("/h/", 16).await.unwrap();
    for r in 17..=21 {
        assert_eq!(next_event(&mut w).await.revision(), r);
    }
}

/// A watch that falls far behind the live buffer catches up from the log, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watch_catches_up_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions {
        watch_buffer: 2,
        ..Default::default()
    };
    let s = RedbStore::open_with(&dir.path().join("state.redb"), options).unwrap();
    let mut w = s.watch("/l/", 0).await.unwrap();
    let mut other = s.watch("/other/", 0).await.unwrap();
    for i in 0..100u32 {
        s.put(&format!("/l/{i:03}"), i.to_le_bytes().to_vec(), Expect::Any)
            .await
            .unwrap();
    }
    for i in 0..100u32 {
        match next_event(&mut w).await {
            WatchEvent::Put(kv) => {
                assert_eq!(kv.key, format!("/l/{i:03}"));
                assert_eq!(kv.mod_revision, u64::from(i) + 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    s.put("/other/x", b"x".to_vec(), Expect::Any).await.unwrap();
    assert_eq!(next_event(&mut other).await.key(), "/other/x");
}

/// A watch that falls behind the live buffer past the kept history ends with Compacted rather
/// than skipping events.
#[tokio::test]
async fn lagging_watch_past_the_history_ends_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions {
        watch_buffer: 2,
        history: 10,
    };
    let s = RedbStore::open_with(&dir.path().join("state.redb"), options).unwrap();
    let mut w = s.watch("/l/", 0).await.unwrap();
    for i in 0..50u32 {
        s.put("/l/k", i.to_le_bytes().to_vec(), Expect::Any)
            .await
            .unwrap();
    }
    match next_item(&mut w).await {
        Some(Err(StoreError::Compacted { requested, oldest })) => {
            assert_eq!((requested, oldest), (0, 41))
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(next_item(&mut w).await.is_none(), "the stream ends");
}

// ---- crash safety ----

/// Set (to the store's path) in the child process the crash test starts.
const CRASH_CHILD: &str = "BERTH_STORE_CRASH_CHILD";
const CRASH_KEYS: u64 = 8;

/// The value of write `i`: its number, length and a pattern of varying size (up to ~256 KiB),
/// so that a torn write cannot pass for a complete one.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the byte pattern wraps on purpose; lengths are under 256 KiB"
)]
fn crash_value(i: u64) -> Vec<u8> {
    let len = (i.wrapping_mul(7919) % (256 << 10)) as usize;
    let mut value = Vec::with_capacity(16 + len);
    value.extend_from_slice(&i.to_le_bytes());
    value.extend_from_slice(&(len as u64).to_le_bytes());
    value.extend((0..len).map(|j| (i as usize).wrapping_mul(131).wrapping_add(j * 7) as u8));
    value
}

fn check_crash_value(key: &str, value: &[u8]) -> u64 {
    assert!(value.len() >= 16, "{key}: a truncated value");
    let i = u64::from_le_bytes(value[..8].try_into().unwrap());
    assert!(
        value == crash_value(i),
        "{key}: the value is not the complete value of write {i}"
    );
    i
}

/// The writer the crash test kills: the crash test itself, run again as a child process with
/// [`CRASH_CHILD`] set to the store's path. It writes until it is killed.
fn crash_writer(path: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = RedbStore::open(path).expect("child: open");
        let start = s.revision().await.unwrap();
        let mut out = std::io::stdout().lock();
        for i in start.. {
            let value = crash_value(i);
            let r = if i % 2 == 0 {
                let key = format!("/crash/k{}", i % CRASH_KEYS);
                s.put(&key, value, Expect::Any).await
            } else {
                s.txn(vec![
                    put_op("/crash/pair/a", &value),
                    put_op("/crash/pair/b", &value),
                ])
                .await
            };
            writeln!(out, "ack {}", r.expect("child: write")).unwrap();
            out.flush().unwrap();
        }
    });
}

/// A writer killed with SIGKILL in the middle of its writes leaves a file that opens, holds
/// every acknowledged write, and whose every value is complete; the two keys each txn writes
/// together hold the same value. Three rounds on the same file, each reopening the last crash.
/// The writer is this same test in a child process (so no helper is listed as a test).
#[test]
fn sigkilled_writer_leaves_a_consistent_file() {
    if let Some(path) = std::env::var_os(CRASH_CHILD) {
        crash_writer(Path::new(&path));
        panic!("the crash writer stopped before it was killed");
    }
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("state.redb");
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..3u32 {
        let mut child = Command::new(&exe)
            .args([
                "sigkilled_writer_leaves_a_consistent_file",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let wanted = 40 + 23 * round as usize;
        let mut acked = 0u64;
        let mut acks = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(r) = line.strip_prefix("ack ") {
                acked = r.parse().unwrap();
                acks += 1;
                if acks == wanted {
                    break;
                }
            }
        }
        assert_eq!(
            acks, wanted,
            "round {round}: the child stopped writing early"
        );
        child.kill().unwrap(); // SIGKILL, in the middle of the next write
        child.wait().unwrap();
        rt.block_on(check_after_crash(&path, round, acked));
    }
}

/// The file a killed writer left: it opens, keeps every acknowledged revision, holds complete
/// values and untorn pairs, and its event log replays to exactly its table.
async fn check_after_crash(path: &Path, round: u32, acked: u64) {
    let s = RedbStore::open(path).expect("the file opens after a SIGKILL");
    let revision = s.revision().await.unwrap();
    assert!(
        revision >= acked,
        "round {round}: acknowledged revision {acked} lost (now {revision})"
    );
    let (kvs, at) = s.list("/crash/").await.unwrap();
    assert_eq!(at, revision);
    assert!(!kvs.is_empty());
    for kv in &kvs {
        check_crash_value(&kv.key, &kv.value);
        assert!(kv.mod_revision <= revision);
    }
    let a = s.get("/crash/pair/a").await.unwrap().expect("pair a");
    let b = s.get("/crash/pair/b").await.unwrap().expect("pair b");
    assert_eq!(
        (a.value == b.value, a.mod_revision),
        (true, b.mod_revision),
        "round {round}: a txn was torn"
    );
    // The log agrees with the table: replaying it rebuilds exactly the listed state.
    // A write after the crash marks the end of the replay.
    let mut w = s.watch("/crash/", 0).await.unwrap();
    let end = s.put("/crash/end", Vec::new(), Expect::Any).await.unwrap();
    s.delete("/crash/end", Expect::Any).await.unwrap();
    assert_eq!(end, revision + 1, "round {round}: the revision continues");
    let mut state = std::collections::BTreeMap::new();
    loop {
        match next_event(&mut w).await {
            WatchEvent::Put(kv) if kv.mod_revision == end => break,
            WatchEvent::Put(kv) => state.insert(kv.key.clone(), kv),
            WatchEvent::Delete { key, .. } => state.remove(&key),
        };
    }
    let brief = |kvs: &[KeyValue]| -> Vec<(String, u64, u64, u64)> {
        kvs.iter()
            .map(|kv| {
                let i = check_crash_value(&kv.key, &kv.value);
                (kv.key.clone(), kv.create_revision, kv.mod_revision, i)
            })
            .collect()
    };
    let replayed: Vec<KeyValue> = state.into_values().collect();
    assert_eq!(
        brief(&replayed),
        brief(&kvs),
        "round {round}: the event log disagrees with the table"
    );
    assert!(
        replayed == kvs,
        "round {round}: the event log disagrees with the table"
    );
}
