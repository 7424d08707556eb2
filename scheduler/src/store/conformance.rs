//! The conformance suite of the [`Store`] contract: every backend runs it in its tests.
//!
//! A backend provides a [`StoreFactory`] (a fresh, empty store per case) and expands
//! [`store_conformance_tests!`](crate::store_conformance_tests) in a test module to get one test
//! per case:
//!
//! ```ignore
//! mod conformance {
//!     berth_scheduler::store_conformance_tests!(super::MyFactory::new());
//! }
//! ```
//!
//! Every case is a public `async fn cNN_name(&factory)` that panics with a message naming the
//! case and what failed. The suite writes only under `/cNN/` keys, so a backend whose stores
//! share one server (etcd) only has to isolate them by prefix; such a backend returns false
//! from [`StoreFactory::owns_revisions`], which relaxes "each write advances the revision by
//! exactly one" to "strictly increases", and "a failed write leaves the revision unchanged" is
//! then not checked. The compaction case needs [`StoreFactory::with_history`]; a backend that
//! cannot bound its history returns None there and the case is skipped (it prints so).
//!
//! Behaviours every backend must share, checked here:
//! - keys are non-empty ([`StoreError::InvalidKey`] on get/put/delete/txn); list and watch
//!   prefixes may be empty (every key);
//! - a write that changes something advances the revision; the first write of a key has
//!   `create_revision == mod_revision`, updates keep `create_revision`;
//! - a failed expectation writes nothing and returns [`StoreError::Conflict`] with the key, the
//!   expectation and the mod revision found (None for a missing key);
//! - deleting a missing key with [`Expect::Any`] (or [`Expect::Absent`]) succeeds, returns the
//!   current revision, advances nothing and produces no watch event; an empty txn, or one whose
//!   ops change nothing, does the same;
//! - a txn may name each key once (InvalidKey otherwise, as etcd does); its events all carry its
//!   one revision and come in op order; of racing txns that each claim one key with
//!   [`Expect::Absent`], exactly one wins and the others write nothing;
//! - a watch gives history first, then live events, in revision order, without gaps or
//!   duplicates; compacted history is [`StoreError::Compacted`] `{ requested: after, oldest }`,
//!   from `watch` itself or as the stream's first item.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::{Expect, KeyValue, Op, Revision, Store, StoreError, WatchEvent, WatchStream};

/// Makes the stores the suite runs against.
pub trait StoreFactory {
    type Store: Store;

    /// A fresh, empty store (or, for a shared server, a store no other case writes under the
    /// `/cNN/` prefixes).
    fn fresh(&self) -> impl Future<Output = Self::Store> + Send;

    /// A fresh store that keeps only the events of the last `revisions` revisions for watches,
    /// or None if the backend cannot be set up so (the compaction case is then skipped).
    fn with_history(&self, revisions: u64) -> impl Future<Output = Option<Self::Store>> + Send {
        let _ = revisions;
        async { None }
    }

    /// Whether only this store's own writes advance its revision, so that every write advances
    /// it by exactly one. False for a store sharing a server with others.
    fn owns_revisions(&self) -> bool {
        true
    }
}

/// How long a case waits for an expected watch event.
const WAIT: Duration = Duration::from_secs(10);
/// How long a case waits to be sure no further watch event comes.
const QUIET: Duration = Duration::from_millis(200);

/// Expands to one `#[tokio::test]` (multi-threaded) per conformance case, each building its
/// factory with `$factory`. Expand it inside a module of a test crate that depends on tokio.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@cases $factory;
            c01_get_missing, c02_put_get_revisions, c03_list_prefix, c04_expect_absent,
            c05_expect_revision, c06_delete, c07_txn_atomic, c08_invalid_keys,
            c09_txn_edge_cases, c10_revisions_increase, c11_watch_from_start,
            c12_watch_from_middle, c13_watch_prefix, c14_watch_deletes,
            c15_watch_no_gaps_under_writes, c16_compare_and_swap_race, c17_compacted,
            c18_large_value, c19_txn_of_the_most_ops, c20_txn_claim_race,
            c21_audit_seq_gap_free);
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let factory = $factory;
                $crate::store::conformance::$case(&factory).await;
            }
        )*
    };
}

// ---- helpers ----

fn kv(key: &str, value: &[u8], create_revision: Revision, mod_revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    }
}

fn put_event(key: &str, value: &[u8], create: Revision, modified: Revision) -> WatchEvent {
    WatchEvent::Put(kv(key, value, create, modified))
}

fn delete_event(key: &str, revision: Revision) -> WatchEvent {
    WatchEvent::Delete {
        key: key.to_owned(),
        mod_revision: revision,
    }
}

fn put_op(key: &str, value: &[u8], expect: Expect) -> Op {
    Op::Put {
        key: key.to_owned(),
        value: value.to_vec(),
        expect,
    }
}

fn delete_op(key: &str, expect: Expect) -> Op {
    Op::Delete {
        key: key.to_owned(),
        expect,
    }
}

async fn put(case: &str, s: &impl Store, key: &str, value: &[u8]) -> Revision {
    s.put(key, value.to_vec(), Expect::Any)
        .await
        .unwrap_or_else(|e| panic!("{case}: put {key}: {e}"))
}

async fn get(case: &str, s: &impl Store, key: &str) -> Option<KeyValue> {
    s.get(key)
        .await
        .unwrap_or_else(|e| panic!("{case}: get {key}: {e}"))
}

async fn revision(case: &str, s: &impl Store) -> Revision {
    s.revision()
        .await
        .unwrap_or_else(|e| panic!("{case}: revision: {e}"))
}

async fn list(case: &str, s: &impl Store, prefix: &str) -> (Vec<KeyValue>, Revision) {
    s.list(prefix)
        .await
        .unwrap_or_else(|e| panic!("{case}: list {prefix:?}: {e}"))
}

async fn watch(case: &str, s: &impl Store, prefix: &str, after: Revision) -> WatchStream {
    s.watch(prefix, after)
        .await
        .unwrap_or_else(|e| panic!("{case}: watch {prefix:?} after {after}: {e}"))
}

async fn next_event(case: &str, w: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(WAIT, w.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("{case}: the watch failed: {e}"),
        Ok(None) => panic!("{case}: the watch ended"),
        Err(_) => panic!("{case}: no watch event within {WAIT:?}"),
    }
}

async fn expect_events(case: &str, w: &mut WatchStream, expected: &[WatchEvent]) {
    for (i, want) in expected.iter().enumerate() {
        let got = next_event(case, w).await;
        assert_eq!(&got, want, "{case}: watch event {i}");
    }
}

async fn expect_quiet(case: &str, w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(QUIET, w.next()).await {
        panic!("{case}: unexpected watch item {item:?}");
    }
}

/// `after` follows `before`: by exactly one when the store owns its revisions.
fn assert_advanced(
    f: &impl StoreFactory,
    case: &str,
    what: &str,
    before: Revision,
    after: Revision,
) {
    if f.owns_revisions() {
        assert_eq!(
            after,
            before + 1,
            "{case}: {what} must advance the revision by one"
        );
    } else {
        assert!(
            after > before,
            "{case}: {what} must advance the revision ({before} -> {after})"
        );
    }
}

/// A write that changed nothing left the revision at `before` (when checkable).
async fn assert_unchanged(
    f: &impl StoreFactory,
    case: &str,
    what: &str,
    s: &impl Store,
    before: Revision,
) {
    if f.owns_revisions() {
        assert_eq!(
            revision(case, s).await,
            before,
            "{case}: {what} must not advance the revision"
        );
    }
}

fn assert_conflict<T: std::fmt::Debug>(
    case: &str,
    what: &str,
    result: Result<T, StoreError>,
    key: &str,
    expected: Expect,
    found: Option<Revision>,
) {
    let want = StoreError::Conflict {
        key: key.to_owned(),
        expected,
        found,
    };
    match result {
        Err(e) => assert_eq!(e, want, "{case}: {what}"),
        Ok(v) => panic!("{case}: {what} must fail with {want:?}, got Ok({v:?})"),
    }
}

fn assert_invalid_key<T: std::fmt::Debug>(case: &str, what: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::InvalidKey { .. }) => {}
        other => panic!("{case}: {what} must fail with InvalidKey, got {other:?}"),
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

// ---- cases ----

/// A missing key is None; an empty prefix lists nothing at the current revision.
pub async fn c01_get_missing<F: StoreFactory>(f: &F) {
    let case = "c01 get missing";
    let s = f.fresh().await;
    assert_eq!(get(case, &s, "/c01/missing").await, None, "{case}");
    let r = revision(case, &s).await;
    let (kvs, at) = list(case, &s, "/c01/").await;
    assert!(
        kvs.is_empty(),
        "{case}: list of an empty prefix gave {kvs:?}"
    );
    if f.owns_revisions() {
        assert_eq!(at, r, "{case}: list must report the current revision");
    }
}

/// First write: create == mod == the write's revision; an update keeps create, moves mod.
pub async fn c02_put_get_revisions<F: StoreFactory>(f: &F) {
    let case = "c02 put/get revisions";
    let s = f.fresh().await;
    let r0 = revision(case, &s).await;
    let r1 = put(case, &s, "/c02/k", b"one").await;
    assert_advanced(f, case, "the first put", r0, r1);
    assert_eq!(
        get(case, &s, "/c02/k").await,
        Some(kv("/c02/k", b"one", r1, r1)),
        "{case}: after the first put"
    );

    let r2 = put(case, &s, "/c02/k", b"two").await;
    assert_advanced(f, case, "an update", r1, r2);
    assert_eq!(
        get(case, &s, "/c02/k").await,
        Some(kv("/c02/k", b"two", r1, r2)),
        "{case}: after the update"
    );

    let r3 = put(case, &s, "/c02/other", b"x").await;
    assert_advanced(f, case, "a put of another key", r2, r3);
    assert_eq!(
        get(case, &s, "/c02/k").await,
        Some(kv("/c02/k", b"two", r1, r2)),
        "{case}: a write of another key must not touch this one"
    );
    let now = revision(case, &s).await;
    if f.owns_revisions() {
        assert_eq!(now, r3, "{case}: revision() after the last write");
    } else {
        assert!(
            now >= r3,
            "{case}: revision() {now} is behind the last write {r3}"
        );
    }
}

/// list(prefix) is sorted by key, holds exactly the keys starting with prefix.
pub async fn c03_list_prefix<F: StoreFactory>(f: &F) {
    let case = "c03 list prefix";
    let s = f.fresh().await;
    let all = [
        "/c03/a/2",
        "/c03/a/1",
        "/c03/ab",
        "/c03/a",
        "/c03/b/1",
        "/c03/a/1/x",
        "/c03/a/10",
    ];
    let mut written = Vec::new();
    for (i, key) in all.iter().enumerate() {
        let value = format!("v{i}");
        let r = put(case, &s, key, value.as_bytes()).await;
        written.push(kv(key, value.as_bytes(), r, r));
    }
    let expect = |prefix: &str| {
        let mut want: Vec<KeyValue> = written
            .iter()
            .filter(|kv| kv.key.starts_with(prefix))
            .cloned()
            .collect();
        want.sort_by(|a, b| a.key.cmp(&b.key));
        want
    };
    let current = revision(case, &s).await;
    for prefix in [
        "/c03/a/", "/c03/a", "/c03/", "/c03/b/", "/c03/c/", "/c03/a/1",
    ] {
        let (got, at) = list(case, &s, prefix).await;
        let want = expect(prefix);
        assert_eq!(
            keys(&got),
            keys(&want),
            "{case}: keys listed under {prefix:?}"
        );
        assert_eq!(got, want, "{case}: entries listed under {prefix:?}");
        if f.owns_revisions() {
            assert_eq!(
                at, current,
                "{case}: list {prefix:?} must report the current revision"
            );
        }
        assert!(
            got.iter().all(|kv| kv.mod_revision <= at),
            "{case}: list revision {at} is older than its entries"
        );
    }
    let (got, _) = list(case, &s, "/c03/a/").await;
    assert_eq!(
        keys(&got),
        ["/c03/a/1", "/c03/a/1/x", "/c03/a/10", "/c03/a/2"],
        "{case}: \"/c03/a/\" must not list \"/c03/ab\" or \"/c03/a\""
    );
}

/// Expect::Absent writes only a missing key.
pub async fn c04_expect_absent<F: StoreFactory>(f: &F) {
    let case = "c04 expect absent";
    let s = f.fresh().await;
    let r1 = s
        .put("/c04/k", b"v1".to_vec(), Expect::Absent)
        .await
        .unwrap_or_else(|e| panic!("{case}: put Absent of a missing key: {e}"));
    let result = s.put("/c04/k", b"v2".to_vec(), Expect::Absent).await;
    assert_conflict(
        case,
        "put Absent of an existing key",
        result,
        "/c04/k",
        Expect::Absent,
        Some(r1),
    );
    assert_eq!(
        get(case, &s, "/c04/k").await,
        Some(kv("/c04/k", b"v1", r1, r1)),
        "{case}: a conflict must not write"
    );
    assert_unchanged(f, case, "a conflict", &s, r1).await;
}

/// Expect::Revision writes only over that exact mod revision.
pub async fn c05_expect_revision<F: StoreFactory>(f: &F) {
    let case = "c05 expect revision";
    let s = f.fresh().await;
    let r1 = put(case, &s, "/c05/k", b"v1").await;
    let r2 = s
        .put("/c05/k", b"v2".to_vec(), Expect::Revision(r1))
        .await
        .unwrap_or_else(|e| panic!("{case}: put with the current revision: {e}"));
    assert_advanced(f, case, "a put with the current revision", r1, r2);
    let result = s.put("/c05/k", b"v3".to_vec(), Expect::Revision(r1)).await;
    assert_conflict(
        case,
        "put with a stale revision",
        result,
        "/c05/k",
        Expect::Revision(r1),
        Some(r2),
    );
    assert_eq!(
        get(case, &s, "/c05/k").await,
        Some(kv("/c05/k", b"v2", r1, r2)),
        "{case}: a conflict must not write"
    );

    let result = s
        .put("/c05/missing", b"x".to_vec(), Expect::Revision(r1))
        .await;
    assert_conflict(
        case,
        "put with a revision on a missing key",
        result,
        "/c05/missing",
        Expect::Revision(r1),
        None,
    );
    assert_eq!(
        get(case, &s, "/c05/missing").await,
        None,
        "{case}: a conflict must not create the key"
    );
    assert_unchanged(f, case, "conflicts", &s, r2).await;
}

/// Deletes honour expectations; deleting a missing key is a no-op; a deleted key starts over.
pub async fn c06_delete<F: StoreFactory>(f: &F) {
    let case = "c06 delete";
    let s = f.fresh().await;
    let r0 = revision(case, &s).await;
    let mut w = watch(case, &s, "/c06/", r0).await;

    let r = s
        .delete("/c06/missing", Expect::Any)
        .await
        .unwrap_or_else(|e| panic!("{case}: deleting a missing key with Any: {e}"));
    if f.owns_revisions() {
        assert_eq!(
            r, r0,
            "{case}: deleting a missing key returns the current revision"
        );
    }
    s.delete("/c06/missing", Expect::Absent)
        .await
        .unwrap_or_else(|e| panic!("{case}: deleting a missing key with Absent: {e}"));
    assert_unchanged(f, case, "deleting a missing key", &s, r0).await;
    let result = s.delete("/c06/missing", Expect::Revision(r0 + 1)).await;
    assert_conflict(
        case,
        "delete with a revision of a missing key",
        result,
        "/c06/missing",
        Expect::Revision(r0 + 1),
        None,
    );

    let r1 = put(case, &s, "/c06/k", b"v").await;
    let result = s.delete("/c06/k", Expect::Revision(r1 + 1000)).await;
    assert_conflict(
        case,
        "delete with a wrong revision",
        result,
        "/c06/k",
        Expect::Revision(r1 + 1000),
        Some(r1),
    );
    let result = s.delete("/c06/k", Expect::Absent).await;
    assert_conflict(
        case,
        "delete with Absent of an existing key",
        result,
        "/c06/k",
        Expect::Absent,
        Some(r1),
    );
    assert_eq!(
        get(case, &s, "/c06/k").await,
        Some(kv("/c06/k", b"v", r1, r1)),
        "{case}: a conflict must not delete"
    );
    assert_unchanged(f, case, "conflicts", &s, r1).await;

    let rd = s
        .delete("/c06/k", Expect::Revision(r1))
        .await
        .unwrap_or_else(|e| panic!("{case}: delete with the current revision: {e}"));
    assert_advanced(f, case, "a delete", r1, rd);
    assert_eq!(
        get(case, &s, "/c06/k").await,
        None,
        "{case}: the key is gone"
    );
    assert!(
        list(case, &s, "/c06/").await.0.is_empty(),
        "{case}: a deleted key must not be listed"
    );

    let r3 = put(case, &s, "/c06/k", b"again").await;
    assert_advanced(f, case, "a put after the delete", rd, r3);
    assert_eq!(
        get(case, &s, "/c06/k").await,
        Some(kv("/c06/k", b"again", r3, r3)),
        "{case}: a re-created key has a new create revision"
    );

    expect_events(
        case,
        &mut w,
        &[
            put_event("/c06/k", b"v", r1, r1),
            delete_event("/c06/k", rd),
            put_event("/c06/k", b"again", r3, r3),
        ],
    )
    .await;
    expect_quiet(case, &mut w).await;
}

/// A txn writes all its ops at one revision, or nothing.
pub async fn c07_txn_atomic<F: StoreFactory>(f: &F) {
    let case = "c07 txn atomic";
    let s = f.fresh().await;
    let rc = put(case, &s, "/c07/c", b"c").await;
    let mut w = watch(case, &s, "/c07/", rc).await;

    let failing = vec![
        put_op("/c07/a", b"A", Expect::Absent),
        put_op("/c07/b", b"B", Expect::Any),
        delete_op("/c07/c", Expect::Revision(rc + 100)),
    ];
    let result = s.txn(failing).await;
    assert_conflict(
        case,
        "a txn whose last op fails",
        result,
        "/c07/c",
        Expect::Revision(rc + 100),
        Some(rc),
    );
    let result = s
        .txn(vec![
            put_op("/c07/c", b"x", Expect::Absent),
            put_op("/c07/a", b"A", Expect::Any),
        ])
        .await;
    assert_conflict(
        case,
        "a txn whose first op fails",
        result,
        "/c07/c",
        Expect::Absent,
        Some(rc),
    );
    assert_eq!(
        get(case, &s, "/c07/a").await,
        None,
        "{case}: a failed txn must write nothing"
    );
    assert_eq!(
        get(case, &s, "/c07/b").await,
        None,
        "{case}: a failed txn must write nothing"
    );
    assert_eq!(
        get(case, &s, "/c07/c").await,
        Some(kv("/c07/c", b"c", rc, rc)),
        "{case}: a failed txn must delete nothing"
    );
    assert_unchanged(f, case, "a failed txn", &s, rc).await;

    let rb = put(case, &s, "/c07/b", b"old").await;
    let rt = s
        .txn(vec![
            put_op("/c07/a", b"A", Expect::Absent),
            put_op("/c07/b", b"B", Expect::Revision(rb)),
            delete_op("/c07/c", Expect::Revision(rc)),
        ])
        .await
        .unwrap_or_else(|e| panic!("{case}: a txn whose expectations hold: {e}"));
    assert_advanced(f, case, "a txn of three ops", rb, rt);
    assert_eq!(
        get(case, &s, "/c07/a").await,
        Some(kv("/c07/a", b"A", rt, rt)),
        "{case}: txn put of a new key"
    );
    assert_eq!(
        get(case, &s, "/c07/b").await,
        Some(kv("/c07/b", b"B", rb, rt)),
        "{case}: txn update"
    );
    assert_eq!(get(case, &s, "/c07/c").await, None, "{case}: txn delete");
    if f.owns_revisions() {
        assert_eq!(revision(case, &s).await, rt, "{case}: one revision per txn");
    }
    expect_events(
        case,
        &mut w,
        &[
            put_event("/c07/b", b"old", rb, rb),
            put_event("/c07/a", b"A", rt, rt),
            put_event("/c07/b", b"B", rb, rt),
            delete_event("/c07/c", rt),
        ],
    )
    .await;
    expect_quiet(case, &mut w).await;
}

/// Empty keys are rejected everywhere a key is named, and nothing is written.
pub async fn c08_invalid_keys<F: StoreFactory>(f: &F) {
    let case = "c08 invalid keys";
    let s = f.fresh().await;
    let r0 = revision(case, &s).await;
    assert_invalid_key(case, "get \"\"", s.get("").await);
    assert_invalid_key(
        case,
        "put \"\"",
        s.put("", b"x".to_vec(), Expect::Any).await,
    );
    assert_invalid_key(case, "delete \"\"", s.delete("", Expect::Any).await);
    assert_invalid_key(
        case,
        "txn with an empty key",
        s.txn(vec![
            put_op("/c08/ok", b"x", Expect::Any),
            put_op("", b"x", Expect::Any),
        ])
        .await,
    );
    assert_eq!(
        get(case, &s, "/c08/ok").await,
        None,
        "{case}: a rejected txn must write nothing"
    );
    assert_unchanged(f, case, "rejected writes", &s, r0).await;
}

/// Empty txns, txns that change nothing and txns naming a key twice.
pub async fn c09_txn_edge_cases<F: StoreFactory>(f: &F) {
    let case = "c09 txn edge cases";
    let s = f.fresh().await;
    let r1 = put(case, &s, "/c09/k", b"v").await;
    let r = s
        .txn(Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{case}: an empty txn: {e}"));
    if f.owns_revisions() {
        assert_eq!(r, r1, "{case}: an empty txn returns the current revision");
    }
    let r = s
        .txn(vec![
            delete_op("/c09/missing", Expect::Any),
            delete_op("/c09/gone", Expect::Absent),
        ])
        .await
        .unwrap_or_else(|e| panic!("{case}: a txn of deletes of missing keys: {e}"));
    if f.owns_revisions() {
        assert_eq!(
            r, r1,
            "{case}: a txn that changes nothing returns the current revision"
        );
    }
    assert_unchanged(f, case, "txns that change nothing", &s, r1).await;

    let result = s
        .txn(vec![
            put_op("/c09/k", b"w", Expect::Any),
            delete_op("/c09/k", Expect::Any),
        ])
        .await;
    assert_invalid_key(case, "a txn naming a key twice", result);
    assert_eq!(
        get(case, &s, "/c09/k").await,
        Some(kv("/c09/k", b"v", r1, r1)),
        "{case}: a rejected txn must write nothing"
    );
    assert_unchanged(f, case, "a rejected txn", &s, r1).await;
}

/// Every write that changes something gets a greater revision than the one before.
pub async fn c10_revisions_increase<F: StoreFactory>(f: &F) {
    let case = "c10 revisions increase";
    let s = f.fresh().await;
    let mut last = revision(case, &s).await;
    for i in 0..30u32 {
        let key = format!("/c10/k{}", i % 4);
        let r = match i % 3 {
            0 => put(case, &s, &key, &i.to_le_bytes()).await,
            1 => s
                .txn(vec![
                    put_op(&key, b"t", Expect::Any),
                    put_op(&format!("/c10/t{i}"), b"t", Expect::Absent),
                ])
                .await
                .unwrap_or_else(|e| panic!("{case}: txn {i}: {e}")),
            _ => {
                let rp = put(case, &s, &key, b"d").await;
                assert_advanced(f, case, &format!("put {i}"), last, rp);
                last = rp;
                s.delete(&key, Expect::Any)
                    .await
                    .unwrap_or_else(|e| panic!("{case}: delete {i}: {e}"))
            }
        };
        assert_advanced(f, case, &format!("write {i}"), last, r);
        last = r;
    }
    let (_, at) = list(case, &s, "/c10/").await;
    if f.owns_revisions() {
        assert_eq!(
            revision(case, &s).await,
            last,
            "{case}: revision() is the last write's"
        );
        assert_eq!(at, last, "{case}: list's revision is the last write's");
    }
}

/// A watch from before the first write replays everything, then follows live writes.
pub async fn c11_watch_from_start<F: StoreFactory>(f: &F) {
    let case = "c11 watch from start";
    let s = f.fresh().await;
    let r0 = revision(case, &s).await;
    let ra = put(case, &s, "/c11/a", b"a").await;
    let rb = put(case, &s, "/c11/b", b"b").await;
    let rb2 = put(case, &s, "/c11/b", b"b2").await;
    let rd = s
        .delete("/c11/a", Expect::Any)
        .await
        .unwrap_or_else(|e| panic!("{case}: delete: {e}"));

    let mut w = watch(case, &s, "/c11/", r0).await;
    expect_events(
        case,
        &mut w,
        &[
            put_event("/c11/a", b"a", ra, ra),
            put_event("/c11/b", b"b", rb, rb),
            put_event("/c11/b", b"b2", rb, rb2),
            delete_event("/c11/a", rd),
        ],
    )
    .await;
    expect_quiet(case, &mut w).await;

    let rc = put(case, &s, "/c11/c", b"c").await;
    let rt = s
        .txn(vec![
            put_op("/c11/d", b"d", Expect::Absent),
            delete_op("/c11/b", Expect::Revision(rb2)),
        ])
        .await
        .unwrap_or_else(|e| panic!("{case}: txn: {e}"));
    expect_events(
        case,
        &mut w,
        &[
            put_event("/c11/c", b"c", rc, rc),
            put_event("/c11/d", b"d", rt, rt),
            delete_event("/c11/b", rt),
        ],
    )
    .await;
    expect_quiet(case, &mut w).await;
}

/// A watch from a revision in the middle gives only what came after it.
pub async fn c12_watch_from_middle<F: StoreFactory>(f: &F) {
    let case = "c12 watch from middle";
    let s = f.fresh().await;
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(put(case, &s, &format!("/c12/k{i}"), b"v").await);
    }
    let mut w = watch(case, &s, "/c12/", revs[2]).await;
    expect_events(
        case,
        &mut w,
        &[
            put_event("/c12/k3", b"v", revs[3], revs[3]),
            put_event("/c12/k4", b"v", revs[4], revs[4]),
        ],
    )
    .await;
    let mut live = watch(case, &s, "/c12/", revs[4]).await;
    expect_quiet(case, &mut live).await;
    let r5 = put(case, &s, "/c12/k0", b"new").await;
    let want = put_event("/c12/k0", b"new", revs[0], r5);
    expect_events(case, &mut w, std::slice::from_ref(&want)).await;
    expect_events(case, &mut live, std::slice::from_ref(&want)).await;
    expect_quiet(case, &mut w).await;
    expect_quiet(case, &mut live).await;
}

/// A watch sees only keys under its prefix, in history and live.
pub async fn c13_watch_prefix<F: StoreFactory>(f: &F) {
    let case = "c13 watch prefix";
    let s = f.fresh().await;
    let r0 = revision(case, &s).await;
    put(case, &s, "/c13/ab", b"no").await;
    put(case, &s, "/c13/a", b"no").await;
    let rx = put(case, &s, "/c13/a/x", b"yes").await;
    put(case, &s, "/c13/b/x", b"no").await;
    let mut w = watch(case, &s, "/c13/a/", r0).await;
    expect_events(case, &mut w, &[put_event("/c13/a/x", b"yes", rx, rx)]).await;

    s.delete("/c13/ab", Expect::Any)
        .await
        .unwrap_or_else(|e| panic!("{case}: delete: {e}"));
    let rt = s
        .txn(vec![
            put_op("/c13/b/y", b"no", Expect::Any),
            put_op("/c13/a/y", b"yes", Expect::Any),
            put_op("/c13/a", b"no", Expect::Any),
            delete_op("/c13/a/x", Expect::Any),
        ])
        .await
        .unwrap_or_else(|e| panic!("{case}: txn: {e}"));
    expect_events(
        case,
        &mut w,
        &[
            put_event("/c13/a/y", b"yes", rt, rt),
            delete_event("/c13/a/x", rt),
        ],
    )
    .await;
    expect_quiet(case, &mut w).await;
}

/// Deletes appear in watches, replayed and live, with the delete's revision.
pub async fn c14_watch_deletes<F: StoreFactory>(f: &F) {
    let case = "c14 watch deletes";
    let s = f.fresh().await;
    let r1 = put(case, &s, "/c14/a", b"a").await;
    let r2 = put(case, &s, "/c14/b", b"b").await;
    let mut live = watch(case, &s, "/c14/", r2).await;
    let rd1 = s
        .delete("/c14/a", Expect::Revision(r1))
        .await
        .unwrap_or_else(|e| panic!("{case}: delete: {e}"));
    s.delete("/c14/a", Expect::Any)
        .await
        .unwrap_or_else(|e| panic!("{case}: delete again: {e}"));
    let rd2 = s
        .txn(vec![
            delete_op("/c14/b", Expect::Any),
            delete_op("/c14/none", Expect::Any),
        ])
        .await
        .unwrap_or_else(|e| panic!("{case}: txn delete: {e}"));
    let want = [delete_event("/c14/a", rd1), delete_event("/c14/b", rd2)];
    expect_events(case, &mut live, &want).await;
    expect_quiet(case, &mut live).await;

    let mut replay = watch(case, &s, "/c14/", r2).await;
    expect_events(case, &mut replay, &want).await;
    expect_quiet(case, &mut replay).await;
}

/// Watches opened while a writer runs see every revision after theirs exactly once, in order.
pub async fn c15_watch_no_gaps_under_writes<F: StoreFactory>(f: &F) {
    let case = "c15 watch without gaps under writes";
    const WRITES: usize = 300;
    let s = Arc::new(f.fresh().await);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            for i in 0..WRITES {
                let key = format!("/c15/k{i:04}");
                let r = s
                    .put(&key, i.to_le_bytes().to_vec(), Expect::Any)
                    .await
                    .unwrap_or_else(|e| panic!("c15: put {key}: {e}"));
                if tx.send((i, r)).is_err() {
                    break;
                }
            }
        })
    };
    // Open watches from the revisions of a few writes while the writer keeps going.
    let mut revs = Vec::with_capacity(WRITES);
    let mut watches = Vec::new();
    while let Some((i, r)) = rx.recv().await {
        revs.push(r);
        if [0, 10, 50, 120, 200].contains(&i) {
            watches.push((i + 1, watch(case, &*s, "/c15/", r).await));
        }
    }
    writer
        .await
        .unwrap_or_else(|e| panic!("{case}: writer: {e}"));
    assert_eq!(revs.len(), WRITES, "{case}: the writer stopped early");
    for (first, mut w) in watches {
        for (i, &r) in revs.iter().enumerate().skip(first) {
            let key = format!("/c15/k{i:04}");
            let want = put_event(&key, &i.to_le_bytes(), r, r);
            let got = next_event(case, &mut w).await;
            assert_eq!(
                got,
                want,
                "{case}: the watch from after write {} at write {i}",
                first - 1
            );
        }
        expect_quiet(case, &mut w).await;
    }
}

/// Racers in c16, and the increments each makes.
const C16_TASKS: u64 = 8;
const C16_ROUNDS: u64 = 20;

/// Of racing writes expecting the same revision, exactly one wins; a compare-and-swap counter
/// incremented by 8 tasks x 20 times ends at 160, each increment seen once by a watch.
pub async fn c16_compare_and_swap_race<F: StoreFactory>(f: &F) {
    let case = "c16 compare-and-swap race";
    let s = Arc::new(f.fresh().await);
    let key = "/c16/counter";
    let r0 = s
        .put(key, b"0".to_vec(), Expect::Absent)
        .await
        .unwrap_or_else(|e| panic!("{case}: put: {e}"));
    let won = c16_one_racer_wins(case, &s, key, r0).await;
    assert_unchanged(f, case, "losing racers", &*s, won).await;

    let start = s
        .put(key, b"0".to_vec(), Expect::Revision(won))
        .await
        .unwrap_or_else(|e| panic!("{case}: reset: {e}"));
    let mut w = watch(case, &*s, key, start).await;
    c16_count_concurrently(case, &s, key).await;
    let last = get(case, &*s, key)
        .await
        .unwrap_or_else(|| panic!("{case}: the counter is gone"));
    assert_eq!(
        last.value,
        (C16_TASKS * C16_ROUNDS).to_string().into_bytes(),
        "{case}: final counter value"
    );
    if f.owns_revisions() {
        assert_eq!(
            last.mod_revision,
            start + C16_TASKS * C16_ROUNDS,
            "{case}: one revision per successful increment"
        );
    }
    let mut previous = start;
    for n in 1..=C16_TASKS * C16_ROUNDS {
        match next_event(case, &mut w).await {
            WatchEvent::Put(kv) => {
                assert_eq!(
                    kv.value,
                    n.to_string().into_bytes(),
                    "{case}: increments in order, each once"
                );
                assert!(
                    kv.mod_revision > previous,
                    "{case}: watch revisions must increase"
                );
                previous = kv.mod_revision;
            }
            other => panic!("{case}: unexpected {other:?}"),
        }
    }
    expect_quiet(case, &mut w).await;
}

/// Races [`C16_TASKS`] writes expecting `r0` at `key`: exactly one must win and the others
/// must see its revision in their Conflict. Returns the winner's revision.
async fn c16_one_racer_wins<S: Store>(
    case: &str,
    s: &Arc<S>,
    key: &'static str,
    r0: Revision,
) -> Revision {
    let racers = usize::try_from(C16_TASKS).expect("a handful of racers");
    let barrier = Arc::new(tokio::sync::Barrier::new(racers));
    let racers: Vec<_> = (0..C16_TASKS)
        .map(|t| {
            let (s, barrier) = (Arc::clone(s), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                s.put(key, format!("racer {t}").into_bytes(), Expect::Revision(r0))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for racer in racers {
        match racer.await.unwrap_or_else(|e| panic!("{case}: racer: {e}")) {
            Ok(r) => winners.push(r),
            Err(e) => losers.push(e),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{case}: exactly one racing write may win, got {winners:?} and {losers:?}"
    );
    let won = winners[0];
    for e in &losers {
        assert_eq!(
            e,
            &StoreError::Conflict {
                key: key.to_owned(),
                expected: Expect::Revision(r0),
                found: Some(won)
            },
            "{case}: a losing racer"
        );
    }
    won
}

/// [`C16_TASKS`] tasks each add one to the counter at `key` [`C16_ROUNDS`] times, by
/// read-then-compare-and-swap, retrying on Conflict.
async fn c16_count_concurrently<S: Store>(case: &str, s: &Arc<S>, key: &'static str) {
    let counters: Vec<_> = (0..C16_TASKS)
        .map(|_| {
            let s = Arc::clone(s);
            tokio::spawn(async move {
                for _ in 0..C16_ROUNDS {
                    while !c16_increment(&*s, key).await {}
                }
            })
        })
        .collect();
    for counter in counters {
        counter
            .await
            .unwrap_or_else(|e| panic!("{case}: counter task: {e}"));
    }
}

/// One compare-and-swap increment of the counter at `key`: false when another write came
/// first (Conflict), so the caller tries again.
async fn c16_increment(s: &impl Store, key: &str) -> bool {
    let current = s
        .get(key)
        .await
        .expect("get the counter")
        .expect("the counter exists");
    let n: u64 = std::str::from_utf8(&current.value)
        .expect("utf-8")
        .parse()
        .expect("a number");
    let next = (n + 1).to_string().into_bytes();
    match s
        .put(key, next, Expect::Revision(current.mod_revision))
        .await
    {
        Ok(_) => true,
        Err(StoreError::Conflict { .. }) => false,
        Err(e) => panic!("c16: increment: {e}"),
    }
}

/// A watch asking for compacted history fails with Compacted; the history still kept and
/// list-then-watch work.
pub async fn c17_compacted<F: StoreFactory>(f: &F) {
    let case = "c17 compacted";
    const HISTORY: u64 = 5;
    let Some(s) = f.with_history(HISTORY).await else {
        eprintln!(
            "{case}: skipped: the backend cannot bound its history (StoreFactory::with_history)"
        );
        return;
    };
    let r0 = revision(case, &s).await;
    let mut revs = Vec::new();
    for i in 0..20u32 {
        revs.push(put(case, &s, &format!("/c17/k{}", i % 3), &i.to_le_bytes()).await);
    }
    let last = *revs.last().expect("writes");

    let oldest = match s.watch("/c17/", r0).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!(
                requested, r0,
                "{case}: Compacted names the revision asked for"
            );
            oldest
        }
        Err(e) => panic!("{case}: watching compacted history must fail with Compacted, got {e}"),
        Ok(mut w) => match tokio::time::timeout(WAIT, w.next()).await {
            Ok(Some(Err(StoreError::Compacted { requested, oldest }))) => {
                assert_eq!(
                    requested, r0,
                    "{case}: Compacted names the revision asked for"
                );
                assert!(
                    w.next().await.is_none(),
                    "{case}: the stream ends after Compacted"
                );
                oldest
            }
            other => {
                panic!("{case}: watching compacted history must fail with Compacted, got {other:?}")
            }
        },
    };
    assert!(
        oldest > r0 + 1,
        "{case}: oldest {oldest} must be past the revision {r0} asked for"
    );
    assert!(
        oldest <= last + 1 - HISTORY,
        "{case}: oldest {oldest} keeps fewer than {HISTORY} revisions (last {last})"
    );
    if f.owns_revisions() {
        assert_eq!(
            oldest,
            last + 1 - HISTORY,
            "{case}: exactly the last {HISTORY} revisions are kept"
        );
    }

    // What is kept can still be watched.
    let mut w = watch(case, &s, "/c17/", oldest - 1).await;
    for (i, &r) in (0..20u32).zip(&revs).filter(|(_, r)| **r >= oldest) {
        match next_event(case, &mut w).await {
            WatchEvent::Put(kv) => {
                assert_eq!(
                    (kv.key.as_str(), kv.mod_revision),
                    (format!("/c17/k{}", i % 3).as_str(), r),
                    "{case}: kept history"
                );
                assert_eq!(kv.value, i.to_le_bytes(), "{case}: kept history value");
            }
            other => panic!("{case}: unexpected {other:?}"),
        }
    }
    // The recovery: list, then watch from the list's revision.
    let (kvs, at) = list(case, &s, "/c17/").await;
    assert_eq!(
        keys(&kvs),
        ["/c17/k0", "/c17/k1", "/c17/k2"],
        "{case}: list after compaction"
    );
    let mut w2 = watch(case, &s, "/c17/", at).await;
    let r = put(case, &s, "/c17/k0", b"live").await;
    let want = put_event("/c17/k0", b"live", revs[0], r);
    expect_events(case, &mut w, std::slice::from_ref(&want)).await;
    expect_events(case, &mut w2, std::slice::from_ref(&want)).await;
}

/// A 1 MiB value and an empty value round-trip through get, list and watch.
pub async fn c18_large_value<F: StoreFactory>(f: &F) {
    let case = "c18 large value";
    let s = f.fresh().await;
    let r0 = revision(case, &s).await;
    let big: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let rb = s
        .put("/c18/big", big.clone(), Expect::Absent)
        .await
        .unwrap_or_else(|e| panic!("{case}: put 1 MiB: {e}"));
    let re = put(case, &s, "/c18/empty", b"").await;
    let got = get(case, &s, "/c18/big")
        .await
        .unwrap_or_else(|| panic!("{case}: the big value is missing"));
    assert!(
        got.value == big,
        "{case}: get gave {} bytes back, not the 1 MiB written",
        got.value.len()
    );
    assert_eq!(
        get(case, &s, "/c18/empty").await,
        Some(kv("/c18/empty", b"", re, re)),
        "{case}: empty value"
    );
    let (kvs, _) = list(case, &s, "/c18/").await;
    assert!(
        kvs.len() == 2 && kvs[0].value == big && kvs[1].value.is_empty(),
        "{case}: list gave other values"
    );
    let mut w = watch(case, &s, "/c18/", r0).await;
    match next_event(case, &mut w).await {
        WatchEvent::Put(kv) => assert!(
            kv.value == big && kv.mod_revision == rb,
            "{case}: watch gave another value"
        ),
        other => panic!("{case}: unexpected {other:?}"),
    }
    expect_events(case, &mut w, &[put_event("/c18/empty", b"", re, re)]).await;
}

/// A transaction of [`MAX_TXN_OPS`](super::MAX_TXN_OPS) writes commits whole on every backend
/// (etcd's own limit is higher), and [`txn_chunked`](super::txn_chunked) writes more in pieces.
pub async fn c19_txn_of_the_most_ops<F: StoreFactory>(f: &F) {
    let case = "c19 txn of the most ops";
    let s = f.fresh().await;
    let ops: Vec<Op> = (0..super::MAX_TXN_OPS)
        .map(|i| put_op(&format!("/c19/a/{i:04}"), b"v", Expect::Absent))
        .collect();
    s.txn(ops)
        .await
        .unwrap_or_else(|e| panic!("{case}: a txn of MAX_TXN_OPS puts: {e}"));
    let (kvs, _) = list(case, &s, "/c19/a/").await;
    assert_eq!(kvs.len(), super::MAX_TXN_OPS, "{case}");
    let count = super::MAX_TXN_OPS * 2 + 7;
    let more: Vec<Op> = (0..count)
        .map(|i| put_op(&format!("/c19/b/{i:04}"), b"v", Expect::Absent))
        .collect();
    super::txn_chunked(&s, more)
        .await
        .unwrap_or_else(|e| panic!("{case}: txn_chunked of {count} puts: {e}"));
    let (kvs, _) = list(case, &s, "/c19/b/").await;
    assert_eq!(kvs.len(), count, "{case}");
}

/// Racing transactions that each write a key of their own and claim one shared key with
/// `Expect::Absent` (how a node reserves its pod CIDR): exactly one wins per claim, the losers
/// write nothing (not even their own key) and see a Conflict on the claimed key.
pub async fn c20_txn_claim_race<F: StoreFactory>(f: &F) {
    let case = "c20 txn claim race";
    const TASKS: usize = 8;
    const ROUNDS: usize = 10;
    let s = Arc::new(f.fresh().await);
    for round in 0..ROUNDS {
        let claim = format!("/c20/claim/{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let racers: Vec<_> = (0..TASKS)
            .map(|t| {
                let (s, barrier, claim) = (Arc::clone(&s), Arc::clone(&barrier), claim.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let ops = vec![
                        put_op(&format!("/c20/own/{round}/{t}"), b"mine", Expect::Absent),
                        put_op(&claim, format!("racer {t}").as_bytes(), Expect::Absent),
                    ];
                    (t, s.txn(ops).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for racer in racers {
            match racer.await.unwrap_or_else(|e| panic!("{case}: racer: {e}")) {
                (t, Ok(r)) => winners.push((t, r)),
                (t, Err(e)) => losers.push((t, e)),
            }
        }
        let [(winner, won)] = winners[..] else {
            panic!(
                "{case}: round {round}: exactly one claim may win, got {winners:?} and {losers:?}"
            );
        };
        let held = get(case, &*s, &claim).await;
        assert_eq!(
            held.map(|kv| kv.value),
            Some(format!("racer {winner}").into_bytes()),
            "{case}: round {round}: the claim holds the winner"
        );
        for (t, e) in &losers {
            assert_eq!(
                e,
                &StoreError::Conflict {
                    key: claim.clone(),
                    expected: Expect::Absent,
                    found: Some(won)
                },
                "{case}: round {round}: racer {t} lost"
            );
        }
        let (own, _) = list(case, &*s, &format!("/c20/own/{round}/")).await;
        assert_eq!(
            keys(&own),
            vec![format!("/c20/own/{round}/{winner}")],
            "{case}: round {round}: only the winner's own key is written"
        );
    }
}

/// The audit log's seq (a counter written in the same transaction as each entry): 16
/// concurrent appends get 1..=16, each once, and every entry is stored under its seq.
pub async fn c21_audit_seq_gap_free<F: StoreFactory>(f: &F) {
    let case = "c21 audit seq gap free";
    const APPENDS: u64 = 16;
    const TASKS: usize = 16;
    let s: Arc<dyn Store> = Arc::new(f.fresh().await);
    let audit = crate::audit::Audit::new(s);
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..APPENDS)
        .map(|i| {
            let (audit, barrier) = (audit.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let entry = berth_proto::v1::AuditEntry {
                    app: format!("app-{i}"),
                    action: "apply".into(),
                    ..Default::default()
                };
                audit.append(entry).await
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        let seq = t
            .await
            .unwrap_or_else(|e| panic!("{case}: task: {e}"))
            .unwrap_or_else(|e| panic!("{case}: append: {e}"));
        seqs.push(seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=APPENDS).collect::<Vec<_>>(), "{case}: seqs");
    let listed = audit
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("{case}: list: {e}"));
    let mut apps: Vec<_> = listed.iter().map(|e| e.app.clone()).collect();
    assert_eq!(
        listed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=APPENDS).collect::<Vec<_>>(),
        "{case}: stored seqs"
    );
    apps.sort_unstable();
    apps.dedup();
    assert_eq!(apps.len(), TASKS, "{case}: every append stored once");
}
