//! The etcd backend: the [`Store`] kept in an etcd (v3 API) cluster, under a key prefix.
//!
//! Every key is stored as `prefix + key`, so several stores (clusters, tests) can share one
//! etcd; the prefix is used literally (`/berth` also covers `/berth2/...`, so give namespaces
//! that share a start a separator of their own). Revisions are etcd's: global to the etcd
//! cluster, so they grow with every write of every store sharing it, strictly increasing.
//!
//! - put, delete and txn are one etcd transaction each: the expectations are compares
//!   (`Expect::Absent` → `version == 0`, `Expect::Revision(r)` → `mod_revision == r`), the
//!   writes the success branch, and the failure branch reads the mod revision of every key
//!   with an expectation, so the [`StoreError::Conflict`] names what was found atomically with
//!   the failed compare. etcd acknowledges a write once a quorum has it in its fsynced log.
//! - A watch is an etcd prefix watch from `after + 1`: history first, then live events. When
//!   the stream breaks (connection lost, member down or restarted), it resumes by itself from
//!   the revision after the last one it delivered, on whichever member answers, and ends with
//!   [`StoreError::Compacted`] only if etcd no longer has that revision.
//!
//! Endpoints: the store keeps one client per member and sends every request to one of them
//! (the pinned member). A request that fails because the member cannot be reached moves the
//! pin to the next member and is retried there, so a dead member costs one failed connect
//! rather than a share of all requests (the balanced channel of `etcd-client` keeps sending to
//! members that are down). Reads are retried on any transient failure, a few rounds with a
//! short backoff; writes only when the request certainly did not reach etcd (connect failed,
//! or the member had no leader), since the outcome of an interrupted write is unknown: that
//! is [`StoreError::Unavailable`] for the caller to decide.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KvClient, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchClient, WatchOptions, WatchResponse,
};
use tokio::sync::mpsc;

use super::{
    Expect, KeyValue, Op, Revision, Store, StoreError, WatchEvent, WatchStream, check_key,
    validate_ops,
};

/// The key prefix of a store when none is given.
pub const DEFAULT_PREFIX: &str = "/berth";

/// How long connecting to a member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on open streams find dead connections under long-lived watches.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer accepted (a list of many keys, a watch batch of large values).
const MAX_MESSAGE: usize = 256 << 20;
/// Pauses between rounds over all members for a retried request.
const RETRY_BACKOFF: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(500),
];
/// A broken watch reconnects after this, doubling up to [`WATCH_BACKOFF_MAX`].
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(50);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Events buffered between a watch's reader task and its consumer.
const WATCH_BUFFER: usize = 64;

/// What `etcd://` URLs got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("etcd store URL {url:?}: {reason}")]
pub struct EtcdUrlError {
    pub url: String,
    pub reason: String,
}

/// The [`Store`] in an etcd cluster. Cheap to clone (the clients are shared).
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
    /// With a leadership: every write also requires this etcd key to exist with this create
    /// revision (the leader's election key), so a scheduler that lost its leadership without
    /// noticing cannot write.
    fence: Option<(String, i64)>,
}

struct Inner {
    members: Vec<Member>,
    /// The index of the member requests go to first.
    pinned: AtomicUsize,
    prefix: String,
}

struct Member {
    /// `http://host:port`.
    endpoint: String,
    /// Owns the endpoint's channel (the request clients below share it).
    client: Client,
    kv: KvClient,
    watch: WatchClient,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints: Vec<&str> = self
            .inner
            .members
            .iter()
            .map(|m| m.endpoint.as_str())
            .collect();
        f.debug_struct("EtcdStore")
            .field("endpoints", &endpoints)
            .field("fence", &self.fence)
            .field("prefix", &self.inner.prefix)
            .field("pinned", &self.inner.pinned.load(Ordering::Relaxed))
            .finish()
    }
}

/// How a failed request may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A read: retried on any transient failure.
    Read,
    /// A write: retried only if it certainly did not reach etcd.
    Write,
}

/// A failed attempt, classified.
enum Failure {
    /// The request did not reach etcd (or etcd refused it unapplied): try another member.
    NotSent(String),
    /// Transient, but the request may have been applied.
    Unknown(String),
    /// Retrying does not help.
    Fatal(StoreError),
}

impl EtcdStore {
    /// A store on the etcd members at `endpoints` (`host:port` or `http://host:port`), keeping
    /// its keys under `prefix` (may be empty; [`DEFAULT_PREFIX`] is usual). Checks that some
    /// member answers: [`StoreError::Unavailable`] if none does.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_require_leader(true);
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let endpoint = if endpoint.starts_with("http://") {
                endpoint.clone()
            } else {
                format!("http://{endpoint}")
            };
            // Connecting is lazy: this fails only on a malformed endpoint.
            let client = Client::connect([endpoint.as_str()], Some(options.clone()))
                .await
                .map_err(|e| StoreError::Backend(format!("etcd endpoint {endpoint}: {e}")))?;
            members.push(Member {
                kv: client
                    .kv_client()
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
                watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
                endpoint,
                client,
            });
        }
        let store = Self {
            inner: Arc::new(Inner {
                members,
                pinned: AtomicUsize::new(0),
                prefix: prefix.to_owned(),
            }),
            fence: None,
        };
        store.revision().await?;
        Ok(store)
    }

    /// The endpoints (`host:port`) of an `etcd://host:port[,host:port...]` URL.
    pub fn parse_url(url: &str) -> Result<Vec<String>, EtcdUrlError> {
        let bad = |reason: String| EtcdUrlError {
            url: url.to_owned(),
            reason,
        };
        let Some(rest) = url.strip_prefix("etcd://") else {
            return Err(bad("expected etcd://HOST:PORT[,HOST:PORT...]".into()));
        };
        if rest.is_empty() {
            return Err(bad("no endpoints after etcd://".into()));
        }
        let mut endpoints: Vec<String> = Vec::new();
        for (i, endpoint) in rest.split(',').enumerate() {
            let n = i + 1;
            if endpoint.is_empty() {
                return Err(bad(format!("endpoint {n} is empty")));
            }
            if let Some(c) = endpoint
                .chars()
                .find(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@'))
            {
                return Err(bad(format!(
                    "endpoint {n} {endpoint:?} has {c:?}: expected HOST:PORT only"
                )));
            }
            let Some((host, port)) = endpoint.rsplit_once(':') else {
                return Err(bad(format!(
                    "endpoint {n} {endpoint:?} has no port: expected HOST:PORT"
                )));
            };
            let bare_host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if bare_host.is_empty() {
                return Err(bad(format!("endpoint {n} {endpoint:?} has no host")));
            }
            if host.contains(':') && bare_host == host {
                return Err(bad(format!(
                    "endpoint {n} {endpoint:?}: an IPv6 host goes in brackets, [ADDR]:PORT"
                )));
            }
            match port.parse::<u16>() {
                Ok(p) if p > 0 => {}
                _ => {
                    return Err(bad(format!(
                        "endpoint {n} {endpoint:?}: port {port:?} is not a number from 1 to 65535"
                    )));
                }
            }
            if endpoints.iter().any(|e| e == endpoint) {
                return Err(bad(format!("endpoint {endpoint:?} is listed twice")));
            }
            endpoints.push(endpoint.to_owned());
        }
        Ok(endpoints)
    }

    /// The prefix every key of this store is stored under.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The same store whose writes succeed only while the etcd key `election_key` (a full key,
    /// outside the prefix) exists with `create_revision`: a leader's writes, fenced by its
    /// election key. A failed fence is [`StoreError::NotLeader`].
    pub fn fenced(&self, election_key: &[u8], create_revision: i64) -> Self {
        Self {
            inner: self.inner.clone(),
            fence: Some((
                String::from_utf8_lossy(election_key).into_owned(),
                create_revision,
            )),
        }
    }

    /// The etcd clients of the members, the pinned (last answering) one first: for the
    /// election, which must survive a dead member as the store does.
    pub fn clients(&self) -> Vec<(String, Client)> {
        let inner = &self.inner;
        let n = inner.members.len();
        let first = inner.pinned.load(Ordering::Relaxed) % n;
        (0..n)
            .map(|i| {
                let m = &inner.members[(first + i) % n];
                (m.endpoint.clone(), m.client.clone())
            })
            .collect()
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// Sends a request made by `request` to the pinned member, moving on to the others as
    /// `retry` allows, a few rounds with a short backoff.
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        retry: Retry,
        mut request: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let inner = &self.inner;
        let n = inner.members.len();
        let mut last = String::new();
        for round in 0..=RETRY_BACKOFF.len() {
            if round > 0 {
                tokio::time::sleep(RETRY_BACKOFF[round - 1]).await;
            }
            let first = inner.pinned.load(Ordering::Relaxed) % n;
            for i in 0..n {
                let index = (first + i) % n;
                let member = &inner.members[index];
                let failure =
                    match tokio::time::timeout(REQUEST_TIMEOUT, request(member.kv.clone())).await {
                        Ok(Ok(value)) => {
                            if index != first {
                                inner.pinned.store(index, Ordering::Relaxed);
                            }
                            return Ok(value);
                        }
                        Ok(Err(e)) => classify(e),
                        Err(_) => Failure::Unknown(format!("no answer within {REQUEST_TIMEOUT:?}")),
                    };
                match failure {
                    Failure::Fatal(e) => return Err(e),
                    Failure::NotSent(message) => {
                        self.unpin(index, &message);
                        last = format!("{}: {message}", member.endpoint);
                    }
                    Failure::Unknown(message) => {
                        self.unpin(index, &message);
                        last = format!("{}: {message}", member.endpoint);
                        if retry == Retry::Write {
                            return Err(StoreError::Unavailable(format!(
                                "etcd {what}: {last} (the write may or may not have been applied)"
                            )));
                        }
                    }
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "etcd {what}: no member answered (last: {last})"
        )))
    }

    /// Moves requests off the member at `index` after it failed (unless another request
    /// already did).
    fn unpin(&self, index: usize, why: &str) {
        let inner = &self.inner;
        let n = inner.members.len();
        if n > 1
            && inner
                .pinned
                .compare_exchange(index, (index + 1) % n, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                failed = %inner.members[index].endpoint,
                next = %inner.members[(index + 1) % n].endpoint,
                "etcd member failed ({why}); moving to the next"
            );
        }
    }

    /// Turns an etcd key back into the store's key.
    fn store_key(&self, key: &[u8]) -> Result<String, StoreError> {
        let prefix = self.inner.prefix.as_bytes();
        let rest = key.strip_prefix(prefix).ok_or_else(|| {
            StoreError::Backend(format!(
                "etcd returned key {:?} outside the prefix {:?}",
                String::from_utf8_lossy(key),
                self.inner.prefix
            ))
        })?;
        String::from_utf8(rest.to_vec()).map_err(|_| {
            StoreError::Backend(format!(
                "etcd key {:?} is not UTF-8",
                String::from_utf8_lossy(key)
            ))
        })
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: self.store_key(kv.key())?,
            value: kv.value().to_vec(),
            create_revision: revision_of(kv.create_revision()),
            mod_revision: revision_of(kv.mod_revision()),
        })
    }

    /// Every write: one etcd transaction (see the module documentation).
    async fn write(&self, what: &str, ops: Vec<Op>) -> Result<Revision, StoreError> {
        validate_ops(&ops)?;
        if ops.len() > super::MAX_TXN_OPS {
            return Err(StoreError::Backend(format!(
                "a transaction of {} writes is more than the {} a store takes at once",
                ops.len(),
                super::MAX_TXN_OPS
            )));
        }
        if ops.is_empty() {
            return self.revision().await;
        }
        let (txn, checks) = self.txn_of(&ops);
        let response = self
            .call(what, Retry::Write, |mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
        if response.succeeded() {
            return header_revision(response.header());
        }
        Err(self.why_refused(what, response, checks))
    }

    /// The etcd transaction of `ops`: their expectations (and the leader's fence) as compares,
    /// the writes when they hold, and otherwise reads of what each compare looked at (the
    /// fence first). Also returns the expectations the failure branch reads, in order.
    fn txn_of(&self, ops: &[Op]) -> (Txn, Vec<(String, Expect)>) {
        let mut compares = Vec::new();
        let mut checks = Vec::new();
        let mut reads = Vec::new();
        let mut writes = Vec::with_capacity(ops.len());
        for op in ops {
            let (key, expect) = match op {
                Op::Put { key, expect, .. } | Op::Delete { key, expect } => (key, *expect),
            };
            let full = self.full_key(key);
            match expect {
                Expect::Any => {}
                Expect::Absent => {
                    compares.push(Compare::version(full.clone(), CompareOp::Equal, 0))
                }
                Expect::Revision(r) => {
                    // A missing key has mod_revision 0: no revision but 0 matches it, and
                    // revision 0 is never a key's.
                    let r = i64::try_from(r).unwrap_or(i64::MAX);
                    compares.push(Compare::mod_revision(full.clone(), CompareOp::Equal, r));
                    if r == 0 {
                        compares.push(Compare::version(full.clone(), CompareOp::Greater, 0));
                    }
                }
            }
            if expect != Expect::Any {
                checks.push((key.clone(), expect));
                reads.push(TxnOp::get(
                    full.clone(),
                    Some(GetOptions::new().with_keys_only()),
                ));
            }
            writes.push(match op {
                Op::Put { value, .. } => TxnOp::put(full, value.clone(), None),
                Op::Delete { .. } => TxnOp::delete(full, None),
            });
        }
        if let Some((key, revision)) = &self.fence {
            compares.push(Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                *revision,
            ));
            reads.insert(
                0,
                TxnOp::get(key.clone(), Some(GetOptions::new().with_keys_only())),
            );
        }
        let txn = Txn::new().when(compares).and_then(writes).or_else(reads);
        (txn, checks)
    }

    /// Why a transaction from [`Self::txn_of`] took its failure branch: the fence gone
    /// (NotLeader), or the first expectation that does not hold (Conflict).
    fn why_refused(
        &self,
        what: &str,
        response: TxnResponse,
        checks: Vec<(String, Expect)>,
    ) -> StoreError {
        let mut answers = response.op_responses().into_iter();
        if let Some((key, revision)) = &self.fence {
            let holder = match answers.next() {
                Some(TxnOpResponse::Get(found)) => {
                    found.kvs().first().map(|kv| kv.create_revision())
                }
                other => {
                    return StoreError::Backend(format!(
                        "etcd {what}: the failure branch answered {other:?}"
                    ));
                }
            };
            if holder != Some(*revision) {
                return StoreError::NotLeader(format!(
                    "election key {key} (revision {revision}) is gone: another scheduler leads"
                ));
            }
        }
        for ((key, expect), found) in checks.into_iter().zip(answers) {
            let TxnOpResponse::Get(found) = found else {
                return StoreError::Backend(format!(
                    "etcd {what}: the failure branch answered {found:?}"
                ));
            };
            let found = found.kvs().first().map(|kv| revision_of(kv.mod_revision()));
            let holds = match expect {
                Expect::Any => true,
                Expect::Absent => found.is_none(),
                Expect::Revision(r) => found == Some(r),
            };
            if !holds {
                return StoreError::Conflict {
                    key,
                    expected: expect,
                    found,
                };
            }
        }
        StoreError::Backend(format!(
            "etcd {what}: the transaction failed but every expectation holds"
        ))
    }

    /// Opens an etcd watch of `full_prefix` from `start` on the first member that answers,
    /// trying each member once (from the pinned one). Waits for etcd to confirm the watch.
    async fn open_watch(
        &self,
        full_prefix: &str,
        start: Revision,
    ) -> Result<etcd_client::WatchStream, StoreError> {
        let inner = &self.inner;
        let n = inner.members.len();
        let first = inner.pinned.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for i in 0..n {
            let index = (first + i) % n;
            let member = &inner.members[index];
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(i64::try_from(start).unwrap_or(i64::MAX));
            let mut client = member.watch.clone();
            let opened = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let mut stream = client.watch(full_prefix, Some(options)).await?;
                match stream.message().await? {
                    Some(response) if response.created() => Ok(Ok(stream)),
                    Some(response) => Ok(Err(format!(
                        "the watch was not created: {}",
                        response.cancel_reason()
                    ))),
                    None => Ok(Err("the watch stream ended at once".to_owned())),
                }
            })
            .await;
            let message = match opened {
                Ok(Ok(Ok(stream))) => {
                    if index != first {
                        inner.pinned.store(index, Ordering::Relaxed);
                    }
                    return Ok(stream);
                }
                Ok(Ok(Err(message))) => message,
                Ok(Err(e)) => match classify(e) {
                    Failure::Fatal(e) => return Err(e),
                    Failure::NotSent(message) | Failure::Unknown(message) => message,
                },
                Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
            };
            self.unpin(index, &message);
            last = format!("{}: {message}", member.endpoint);
        }
        Err(StoreError::Unavailable(format!(
            "etcd watch: no member answered (last: {last})"
        )))
    }

    /// Opens a watch like [`Self::open_watch`], a few rounds with a short backoff.
    async fn open_watch_retrying(
        &self,
        full_prefix: &str,
        start: Revision,
    ) -> Result<etcd_client::WatchStream, StoreError> {
        let mut result = self.open_watch(full_prefix, start).await;
        for pause in RETRY_BACKOFF {
            match result {
                Err(StoreError::Unavailable(_)) => {}
                done => return done,
            }
            tokio::time::sleep(pause).await;
            result = self.open_watch(full_prefix, start).await;
        }
        result
    }

    /// Converts the events of one watch response, dropping any at or below `delivered`.
    fn watch_events(
        &self,
        response: &WatchResponse,
        delivered: Revision,
    ) -> Vec<Result<WatchEvent, StoreError>> {
        let mut events = Vec::with_capacity(response.events().len());
        for event in response.events() {
            let Some(kv) = event.kv() else {
                events.push(Err(StoreError::Backend(
                    "etcd sent a watch event without its key".into(),
                )));
                return events;
            };
            if revision_of(kv.mod_revision()) <= delivered {
                continue;
            }
            events.push(match event.event_type() {
                EventType::Put => self.key_value(kv).map(WatchEvent::Put),
                EventType::Delete => self.store_key(kv.key()).map(|key| WatchEvent::Delete {
                    key,
                    mod_revision: revision_of(kv.mod_revision()),
                }),
            });
        }
        events
    }

    /// Follows one watch: delivers events into `tx`, resumes broken streams from the revision
    /// after the last one delivered, ends with Compacted when etcd says so, and stops when the
    /// receiver goes away.
    async fn run_watch(
        self,
        full_prefix: String,
        mut delivered: Revision,
        mut stream: etcd_client::WatchStream,
        tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
    ) {
        loop {
            // Follow the stream until it breaks.
            let broke = loop {
                let message = tokio::select! {
                    () = tx.closed() => return,
                    message = stream.message() => message,
                };
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => break "the stream ended".to_owned(),
                    Err(e) => break e.to_string(),
                };
                if response.canceled() {
                    if response.compact_revision() > 0 {
                        let _ = tx
                            .send(Err(StoreError::Compacted {
                                requested: delivered,
                                oldest: revision_of(response.compact_revision()),
                            }))
                            .await;
                        return;
                    }
                    break format!("etcd canceled the watch: {}", response.cancel_reason());
                }
                let mut newest = delivered;
                for item in self.watch_events(&response, delivered) {
                    let failed = item.is_err();
                    if let Ok(event) = &item {
                        newest = newest.max(event.revision());
                    }
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
                // etcd sends each revision's events in one response.
                delivered = newest;
            };

            // Resume after the last revision delivered.
            let mut pause = WATCH_BACKOFF_MIN;
            let mut attempt = 0u32;
            tracing::warn!(
                prefix = %full_prefix,
                resume_from = delivered + 1,
                "etcd watch broke ({broke}); resuming"
            );
            stream = loop {
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                attempt += 1;
                match self.open_watch(&full_prefix, delivered + 1).await {
                    Ok(stream) => {
                        tracing::info!(
                            prefix = %full_prefix,
                            resume_from = delivered + 1,
                            attempt,
                            "etcd watch resumed"
                        );
                        break stream;
                    }
                    Err(StoreError::Unavailable(e)) => {
                        tracing::debug!(prefix = %full_prefix, attempt, "etcd watch resume: {e}");
                        pause = (pause * 2).min(WATCH_BACKOFF_MAX);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            };
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let full = self.full_key(key);
        let response = self
            .call("get", Retry::Read, |mut kv| {
                let full = full.clone();
                async move { kv.get(full, None).await }
            })
            .await?;
        response
            .kvs()
            .first()
            .map(|kv| self.key_value(kv))
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let full = self.full_key(prefix);
        let response = self
            .call("list", Retry::Read, |mut kv| {
                let full = full.clone();
                async move { kv.get(full, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let kvs = response
            .kvs()
            .iter()
            .map(|kv| self.key_value(kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((kvs, header_revision(response.header())?))
    }

    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<Revision, StoreError> {
        let op = Op::Put {
            key: key.to_owned(),
            value,
            expect,
        };
        self.write("put", vec![op]).await
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<Revision, StoreError> {
        let op = Op::Delete {
            key: key.to_owned(),
            expect,
        };
        self.write("delete", vec![op]).await
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        self.write("txn", ops).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let full = self.full_key(prefix);
        let stream = self.open_watch_retrying(&full, after + 1).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(self.clone().run_watch(full, after, stream, tx));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        // A linearizable count of one key: its header is the current revision.
        let key = if self.inner.prefix.is_empty() {
            "/".to_owned()
        } else {
            self.inner.prefix.clone()
        };
        let response = self
            .call("revision", Retry::Read, |mut kv| {
                let key = key.clone();
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        header_revision(response.header())
    }
}

/// etcd revisions are positive i64s.
fn revision_of(r: i64) -> Revision {
    Revision::try_from(r).unwrap_or(0)
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| revision_of(h.revision()))
        .ok_or_else(|| StoreError::Backend("etcd answered without a response header".into()))
}

/// Sorts a failed request into retry classes (see [`Failure`]).
fn classify(e: etcd_client::Error) -> Failure {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message().to_owned();
            match status.code() {
                Code::Unavailable if not_connected(&status) || message.contains("no leader") => {
                    Failure::NotSent(message)
                }
                // "etcdserver: too many requests": refused before it was proposed.
                Code::ResourceExhausted if message.contains("too many requests") => {
                    Failure::NotSent(message)
                }
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
                    Failure::Unknown(message)
                }
                Code::Unknown if std::error::Error::source(&status).is_some() => {
                    Failure::Unknown(format!("{message}: {}", error_chain(&status)))
                }
                code => Failure::Fatal(StoreError::Backend(format!("etcd: {code:?}: {message}"))),
            }
        }
        etcd_client::Error::TransportError(e) => Failure::Unknown(format!("transport: {e}")),
        etcd_client::Error::IoError(e) => Failure::Unknown(format!("I/O: {e}")),
        etcd_client::Error::WatchError(e) => Failure::Unknown(format!("watch: {e}")),
        other => Failure::Fatal(StoreError::Backend(format!("etcd: {other}"))),
    }
}

/// Whether the status says the connection to the member could not be made (so the request
/// was not sent).
fn not_connected(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
