//! The embedded backend: one [redb](https://docs.rs/redb) file (`DATA/scheduler/state.redb`).
//!
//! Three tables:
//! - `kv`: key → `create_revision (u64 LE) ‖ mod_revision (u64 LE) ‖ value`;
//! - `meta`: `format` (1), `revision` (the current revision), `compacted` (the newest revision
//!   whose events are no longer kept; 0 while nothing is compacted);
//! - `log`: revision → the events of that revision (a transaction's in op order), kept for the
//!   last [`RedbOptions::history`] revisions so that watches can resume from a recent revision.
//!
//! Every write (put, delete, txn) is one redb write transaction with immediate durability: it is
//! committed, with fsync, before the call returns. A write that changes something advances the
//! revision by exactly one and appends one log entry; a write that changes nothing (deleting a
//! missing key, an empty txn) commits nothing and returns the current revision. A failed
//! expectation aborts the whole transaction and returns [`StoreError::Conflict`] naming the key.
//!
//! After a commit, the revision's events are published on a tokio broadcast channel (under the
//! writer lock, so in revision order). A watch subscribes to it before reading the log, replays
//! the log from its revision, then follows the broadcast, skipping what the log already gave.
//! A watch that falls behind the broadcast buffer does not lose events: it goes back to the log
//! from the last revision it delivered, and ends with [`StoreError::Compacted`] only when that
//! history is gone (the caller then lists again and watches from the list's revision).
//!
//! redb is synchronous: every call runs on [`tokio::task::spawn_blocking`].

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::broadcast;

use super::{
    Expect, KeyValue, Op, Revision, Store, StoreError, WatchEvent, WatchStream, check_key,
    validate_ops,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const FORMAT: u64 = 1;

/// How many revisions of events are kept for watches by default.
pub const DEFAULT_HISTORY: u64 = 10_000;
/// How many revisions a watch may fall behind the live broadcast before it goes back to the log.
pub const DEFAULT_WATCH_BUFFER: usize = 256;

/// A replay reads the log in pages of at most this many revisions...
const PAGE_REVISIONS: usize = 512;
/// ...or about this many bytes of encoded events.
const PAGE_BYTES: usize = 8 << 20;

/// Settings of a [`RedbStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedbOptions {
    /// Revisions of events kept in the log for watches ([`DEFAULT_HISTORY`]).
    pub history: u64,
    /// Revisions buffered per watch on the live broadcast ([`DEFAULT_WATCH_BUFFER`], at least 1).
    pub watch_buffer: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            history: DEFAULT_HISTORY,
            watch_buffer: DEFAULT_WATCH_BUFFER,
        }
    }
}

/// The [`Store`] kept in one redb file. Cheap to clone (the handle is shared); the file is
/// closed when the last clone is dropped (watch streams do not keep it open: they end with
/// [`StoreError::Unavailable`]).
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    history: AtomicU64,
    /// Held from the start of a write transaction until its events are published, so that the
    /// broadcast carries revisions in order.
    writer: Mutex<()>,
    events: broadcast::Sender<Arc<Batch>>,
}

/// The events of one committed revision.
#[derive(Debug)]
struct Batch {
    revision: Revision,
    events: Vec<WatchEvent>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
            .field("history", &self.inner.history.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the store at `path`, creating the file (and its parent directories) if missing,
    /// with the default [`RedbOptions`]. A file another process (or another handle in this
    /// process) has open gives [`StoreError::Unavailable`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Opens the store at `path` with `options`.
    pub fn open_with(path: &Path, options: RedbOptions) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", parent.display())))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "{} is already open (another scheduler?)",
                path.display()
            )),
            e => StoreError::Backend(format!("opening {}: {e}", path.display())),
        })?;
        init(&db).map_err(|e| match e {
            StoreError::Backend(m) => StoreError::Backend(format!("{}: {m}", path.display())),
            e => e,
        })?;
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path: path.to_owned(),
                history: AtomicU64::new(options.history),
                writer: Mutex::new(()),
                events,
            }),
        })
    }

    /// Keeps the events of the last `revisions` revisions for watches (default
    /// [`DEFAULT_HISTORY`]). Older ones are dropped at the next write.
    pub fn with_history(self, revisions: u64) -> Self {
        self.inner.history.store(revisions, Ordering::Relaxed);
        self
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || f(&inner)).await
    }
}

async fn run_blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(format!("redb: {}", e.into()))
}

fn corrupt(what: String) -> StoreError {
    StoreError::Backend(format!("corrupt store: {what}"))
}

/// Creates the tables of a new file, or checks the format of an existing one.
fn init(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let format = meta.get(META_FORMAT).map_err(db_err)?.map(|v| v.value());
        match format {
            None => {
                meta.insert(META_FORMAT, FORMAT).map_err(db_err)?;
                meta.insert(META_REVISION, 0).map_err(db_err)?;
                meta.insert(META_COMPACTED, 0).map_err(db_err)?;
            }
            Some(FORMAT) => {}
            Some(other) => {
                return Err(StoreError::Backend(format!(
                    "state format {other} is not the {FORMAT} this build reads"
                )));
            }
        }
        txn.open_table(KV).map_err(db_err)?;
        txn.open_table(LOG).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)
}

fn meta_value(meta: &impl ReadableTable<&'static str, u64>, name: &str) -> Result<u64, StoreError> {
    meta.get(name)
        .map_err(db_err)?
        .map(|v| v.value())
        .ok_or_else(|| corrupt(format!("meta {name} is missing")))
}

// ---- encodings ----

fn encode_record(create: Revision, modified: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// `(create_revision, mod_revision, value)` of a `kv` record.
fn decode_record<'a>(
    key: &str,
    raw: &'a [u8],
) -> Result<(Revision, Revision, &'a [u8]), StoreError> {
    let mut r = Reader(raw);
    let parsed = (|| Some((r.u64()?, r.u64()?)))();
    let (create, modified) =
        parsed.ok_or_else(|| corrupt(format!("record of {key:?} is short")))?;
    Ok((create, modified, r.0))
}

fn decode_kv(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    let (create_revision, mod_revision, value) = decode_record(key, raw)?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    })
}

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;

/// A revision's events: for each, a tag, the key (u32 LE length + bytes) and, for a put, the
/// create revision (u64 LE) and the value (u64 LE length + bytes).
fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let size = events
        .iter()
        .map(|e| match e {
            WatchEvent::Put(kv) => 21 + kv.key.len() + kv.value.len(),
            WatchEvent::Delete { key, .. } => 5 + key.len(),
        })
        .sum();
    let mut out = Vec::with_capacity(size);
    for event in events {
        let key = event.key();
        out.push(match event {
            WatchEvent::Put(_) => TAG_PUT,
            WatchEvent::Delete { .. } => TAG_DELETE,
        });
        // Keys arrive in gRPC messages, capped far below 4 GiB.
        let key_len = u32::try_from(key.len()).expect("a key shorter than 4 GiB");
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        if let WatchEvent::Put(kv) = event {
            out.extend_from_slice(&kv.create_revision.to_le_bytes());
            out.extend_from_slice(&(kv.value.len() as u64).to_le_bytes());
            out.extend_from_slice(&kv.value);
        }
    }
    out
}

fn decode_events(revision: Revision, raw: &[u8]) -> Result<Vec<WatchEvent>, StoreError> {
    let mut r = Reader(raw);
    let mut events = Vec::new();
    while !r.0.is_empty() {
        let event = (|| {
            let tag = r.take(1)?[0];
            let len = r.u32()? as usize;
            let key = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
            match tag {
                TAG_PUT => {
                    let create_revision = r.u64()?;
                    let len = usize::try_from(r.u64()?).ok()?;
                    let value = r.take(len)?.to_vec();
                    Some(WatchEvent::Put(KeyValue {
                        key,
                        value,
                        create_revision,
                        mod_revision: revision,
                    }))
                }
                TAG_DELETE => Some(WatchEvent::Delete {
                    key,
                    mod_revision: revision,
                }),
                _ => None,
            }
        })();
        events.push(event.ok_or_else(|| corrupt(format!("log entry {revision} is malformed")))?);
    }
    Ok(events)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

// ---- writes ----

fn check_expect(key: &str, expect: Expect, found: Option<Revision>) -> Result<(), StoreError> {
    let holds = match expect {
        Expect::Any => true,
        Expect::Absent => found.is_none(),
        Expect::Revision(r) => found == Some(r),
    };
    if holds {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            key: key.to_owned(),
            expected: expect,
            found,
        })
    }
}

enum Staged {
    /// Nothing to change: the current revision.
    Unchanged(Revision),
    Changed(Batch),
}

/// Applies `ops` in `txn` (checking every expectation first), appends the log entry, advances
/// the revision and drops history older than the configured window.
fn stage(inner: &Inner, txn: &WriteTransaction, ops: Vec<Op>) -> Result<Staged, StoreError> {
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let mut kv = txn.open_table(KV).map_err(db_err)?;
    let current = meta_value(&meta, META_REVISION)?;
    let revision = current + 1;

    let mut events = Vec::with_capacity(ops.len());
    for op in ops {
        let (key, expect) = match &op {
            Op::Put { key, expect, .. } | Op::Delete { key, expect } => (key.as_str(), *expect),
        };
        let found = match kv.get(key).map_err(db_err)? {
            Some(raw) => {
                let (create, modified, _) = decode_record(key, raw.value())?;
                Some((create, modified))
            }
            None => None,
        };
        check_expect(key, expect, found.map(|(_, m)| m))?;
        match op {
            Op::Put { key, value, .. } => events.push(WatchEvent::Put(KeyValue {
                key,
                value,
                create_revision: found.map_or(revision, |(c, _)| c),
                mod_revision: revision,
            })),
            Op::Delete { key, .. } => {
                if found.is_some() {
                    events.push(WatchEvent::Delete {
                        key,
                        mod_revision: revision,
                    });
                }
            }
        }
    }
    if events.is_empty() {
        return Ok(Staged::Unchanged(current));
    }

    for event in &events {
        match event {
            WatchEvent::Put(v) => {
                let record = encode_record(v.create_revision, revision, &v.value);
                kv.insert(v.key.as_str(), record.as_slice())
                    .map_err(db_err)?;
            }
            WatchEvent::Delete { key, .. } => {
                kv.remove(key.as_str()).map_err(db_err)?;
            }
        }
    }
    let mut log = txn.open_table(LOG).map_err(db_err)?;
    log.insert(revision, encode_events(&events).as_slice())
        .map_err(db_err)?;
    meta.insert(META_REVISION, revision).map_err(db_err)?;

    let cut = revision.saturating_sub(inner.history.load(Ordering::Relaxed));
    if cut > meta_value(&meta, META_COMPACTED)? {
        log.retain_in(..=cut, |_, _| false).map_err(db_err)?;
        meta.insert(META_COMPACTED, cut).map_err(db_err)?;
    }
    Ok(Staged::Changed(Batch { revision, events }))
}

fn write(inner: &Inner, ops: Vec<Op>) -> Result<Revision, StoreError> {
    validate_ops(&ops)?;
    let _writer = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
    let txn = inner.db.begin_write().map_err(db_err)?;
    match stage(inner, &txn, ops) {
        Ok(Staged::Changed(batch)) => {
            txn.commit().map_err(db_err)?;
            let revision = batch.revision;
            // No receiver (no watch) is not an error.
            let _ = inner.events.send(Arc::new(batch));
            Ok(revision)
        }
        Ok(Staged::Unchanged(revision)) => {
            txn.abort().map_err(db_err)?;
            Ok(revision)
        }
        Err(e) => {
            // The failure (a Conflict, usually) is the answer; a failed abort only gets logged.
            if let Err(abort) = txn.abort() {
                tracing::warn!(path = %inner.path.display(), "aborting a store write: {abort}");
            }
            Err(e)
        }
    }
}

// ---- watches ----

/// Events read from the log.
struct Page {
    events: Vec<WatchEvent>,
    /// The last revision the page covers.
    upto: Revision,
    /// Whether the page reached the revision current when it was read.
    caught_up: bool,
}

/// Reads the log from revision `from` on (at most a page), keeping events under `prefix`.
fn read_page(inner: &Inner, from: Revision, prefix: &str) -> Result<Page, StoreError> {
    let txn = inner.db.begin_read().map_err(db_err)?;
    let meta = txn.open_table(META).map_err(db_err)?;
    let current = meta_value(&meta, META_REVISION)?;
    let compacted = meta_value(&meta, META_COMPACTED)?;
    if from <= compacted {
        return Err(StoreError::Compacted {
            requested: from - 1,
            oldest: compacted + 1,
        });
    }
    let mut page = Page {
        events: Vec::new(),
        upto: current.max(from - 1),
        caught_up: true,
    };
    if from > current {
        return Ok(page);
    }
    let log = txn.open_table(LOG).map_err(db_err)?;
    let (mut revisions, mut bytes) = (0, 0);
    for entry in log.range(from..=current).map_err(db_err)? {
        let (revision, raw) = entry.map_err(db_err)?;
        let revision = revision.value();
        let raw = raw.value();
        page.events.extend(
            decode_events(revision, raw)?
                .into_iter()
                .filter(|e| e.key().starts_with(prefix)),
        );
        revisions += 1;
        bytes += raw.len();
        if revision < current && (revisions >= PAGE_REVISIONS || bytes >= PAGE_BYTES) {
            page.upto = revision;
            page.caught_up = false;
            break;
        }
    }
    Ok(page)
}

struct Watcher {
    inner: Weak<Inner>,
    prefix: String,
    rx: broadcast::Receiver<Arc<Batch>>,
    /// The next revision to deliver: everything below it was delivered (or filtered out).
    next: Revision,
    /// Whether the log still has revisions to give before the broadcast takes over.
    replaying: bool,
    pending: VecDeque<WatchEvent>,
    done: bool,
}

impl Watcher {
    fn fail(&mut self, e: StoreError) -> Option<Result<WatchEvent, StoreError>> {
        self.done = true;
        Some(Err(e))
    }

    async fn next_item(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if self.replaying {
                let Some(inner) = self.inner.upgrade() else {
                    return self.fail(closed());
                };
                let (from, prefix) = (self.next, self.prefix.clone());
                match run_blocking(move || read_page(&inner, from, &prefix)).await {
                    Ok(page) => self.take_page(page),
                    Err(e) => return self.fail(e),
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(batch) if batch.revision < self.next => {}
                Ok(batch) if batch.revision == self.next => {
                    let prefix = &self.prefix;
                    self.pending.extend(
                        batch
                            .events
                            .iter()
                            .filter(|e| e.key().starts_with(prefix.as_str()))
                            .cloned(),
                    );
                    self.next = batch.revision + 1;
                }
                // A revision is missing between the log and the broadcast: the log has it.
                Ok(_) => self.replaying = true,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the buffer: subscribe again, then catch up from the log.
                    self.rx = self.rx.resubscribe();
                    self.replaying = true;
                }
                Err(broadcast::error::RecvError::Closed) => return self.fail(closed()),
            }
        }
    }

    fn take_page(&mut self, page: Page) {
        self.pending.extend(page.events);
        self.next = page.upto + 1;
        self.replaying = !page.caught_up;
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("the store was closed".to_owned())
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(db_err)?;
            let kv = txn.open_table(KV).map_err(db_err)?;
            let raw = kv.get(key.as_str()).map_err(db_err)?;
            raw.map(|raw| decode_kv(&key, raw.value())).transpose()
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(db_err)?;
            let revision = meta_value(&txn.open_table(META).map_err(db_err)?, META_REVISION)?;
            let kv = txn.open_table(KV).map_err(db_err)?;
            let mut out = Vec::new();
            for entry in kv.range(prefix.as_str()..).map_err(db_err)? {
                let (key, raw) = entry.map_err(db_err)?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                out.push(decode_kv(key, raw.value())?);
            }
            Ok((out, revision))
        })
        .await
    }

    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<Revision, StoreError> {
        let op = Op::Put {
            key: key.to_owned(),
            value,
            expect,
        };
        self.blocking(move |inner| write(inner, vec![op])).await
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<Revision, StoreError> {
        let op = Op::Delete {
            key: key.to_owned(),
            expect,
        };
        self.blocking(move |inner| write(inner, vec![op])).await
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        self.blocking(move |inner| write(inner, ops)).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Subscribe before reading the log: whatever commits after the read is on the channel.
        let rx = self.inner.events.subscribe();
        let from = after.saturating_add(1);
        let owned = prefix.to_owned();
        // The first page is read here so that compacted history fails the call itself.
        let page = self
            .blocking(move |inner| read_page(inner, from, &owned))
            .await?;
        let mut watcher = Watcher {
            inner: Arc::downgrade(&self.inner),
            prefix: prefix.to_owned(),
            rx,
            next: from,
            replaying: true,
            pending: VecDeque::new(),
            done: false,
        };
        watcher.take_page(page);
        Ok(Box::pin(futures::stream::unfold(
            watcher,
            |mut w| async move {
                let item = w.next_item().await?;
                Some((item, w))
            },
        )))
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.blocking(|inner| {
            let txn = inner.db.begin_read().map_err(db_err)?;
            meta_value(&txn.open_table(META).map_err(db_err)?, META_REVISION)
        })
        .await
    }
}
