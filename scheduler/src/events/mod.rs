//! The cluster's event log: events kept in the store under `/events/log/<seq>` with a counter
//! (`/events/seq`), so they are numbered 1, 2, 3, ... with no gaps, survive a failover, and a
//! client resumes after the last revision it saw. A bounded number is kept (`retention`).
//!
//! Publishing never waits: [`Publisher::publish`] queues the event for one writer task, which
//! appends queued events in batches and then hands them to a broadcast for live readers. A
//! full queue drops the event (logged), so a slow store cannot stall the control loop; a
//! reader that falls `buffer` events behind the broadcast is dropped, told where to resume.

pub(crate) mod read;
#[cfg(test)]
mod tests;
pub(crate) mod tracker;

use std::sync::Arc;

use berth_proto::v1::{AuditEntry, Event, EventKind};
use tokio::sync::{broadcast, mpsc};

use crate::clock::now_ms;
use crate::environments::key::normalize;
use crate::error::SchedError;
use crate::records;
use crate::store::{Expect, MAX_TXN_OPS, Op, Store, StoreError};

/// `/events/seq`: the last revision used (8 bytes, big endian).
const SEQ_KEY: &str = "/events/seq";
/// `/events/log/<revision, zero-padded so keys sort by number>`
const ENTRIES: &str = "/events/log/";

/// Events waiting for the writer; beyond this, publishing drops events (and says so).
const QUEUE: usize = 4096;
/// Each event is a put and a retention delete, plus the counter: fits in one transaction.
const BATCH: usize = (MAX_TXN_OPS - 1) / 2;
/// Appends lose a race only to another writer (a leader's successor); past this, give up.
const APPEND_ATTEMPTS: usize = 100;
/// How many of the newest events the leader keeps in memory for pages that show a
/// deployment's recent events (the dashboard), so a page render never lists the whole log.
const RECENT: usize = 1000;

/// The newest events, oldest first: filled from the store on first use, then by the writer.
/// None until first used (nothing is read at start-up for a dashboard nobody opens).
type Recent = Arc<tokio::sync::Mutex<Option<std::collections::VecDeque<Event>>>>;

fn entry_key(revision: u64) -> String {
    format!("{ENTRIES}{revision:020}")
}

/// How many events are kept and how far a live reader may fall behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Events kept in the store; older ones are deleted as new ones are written.
    pub retention: u64,
    /// Live events a reader may be behind before it is dropped as a slow consumer (at least
    /// one write batch, 49).
    pub buffer: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            retention: 10_000,
            buffer: 1024,
        }
    }
}

/// Where events are published: cheap to clone; the default publishes nowhere (unit tests of
/// components that publish).
#[derive(Debug, Clone, Default)]
pub(crate) struct Publisher {
    queue: Option<mpsc::Sender<Event>>,
}

impl Publisher {
    /// Queues `event`, stamped now, without waiting.
    pub(crate) fn publish(&self, mut event: Event) {
        let Some(queue) = &self.queue else { return };
        event.at_ms = now_ms();
        if let Err(e) = queue.try_send(event) {
            let kind = match &e {
                mpsc::error::TrySendError::Full(_) => "the event queue is full",
                mpsc::error::TrySendError::Closed(_) => "the event writer stopped",
            };
            tracing::warn!("event dropped: {kind}");
        }
    }

    /// The event for an audit entry: approvals and promotions by their own kinds.
    pub(crate) fn audit(&self, entry: &AuditEntry) {
        let kind = match entry.action.as_str() {
            "approve" | "reject" => EventKind::Approval,
            "promote" => EventKind::Promotion,
            _ => EventKind::Audit,
        };
        self.publish(Event {
            kind: kind.into(),
            environment: normalize(&entry.environment).to_string(),
            deployment: entry.app.clone(),
            action: entry.action.clone(),
            deployment_revision: entry.to_revision,
            message: audit_message(entry),
            ..Default::default()
        });
    }
}

/// "alice: approve, ok (audit 12)": who did what and how it ended; never a secret's value
/// (audit entries hold names and versions only).
fn audit_message(e: &AuditEntry) -> String {
    let mut text = format!("{}: {}, {} (audit {})", e.who, e.action, e.outcome, e.seq);
    if !e.detail.is_empty() {
        text.push_str(" - ");
        text.push_str(&e.detail);
    }
    text
}

/// The log's reading side: what the EventService serves from.
#[derive(Debug, Clone)]
pub(crate) struct EventLog {
    store: Arc<dyn Store>,
    live: broadcast::Sender<Event>,
    recent: Recent,
}

/// Starts the writer of the log in `store`; it runs until every [`Publisher`] is dropped.
pub(crate) fn start(store: Arc<dyn Store>, settings: Settings) -> (Publisher, EventLog) {
    let (queue, rx) = mpsc::channel(QUEUE);
    // At least a batch: the writer broadcasts a batch at once, and a reader that keeps up
    // must not be dropped for that.
    let live = broadcast::channel(settings.buffer.max(BATCH)).0;
    let recent = Recent::default();
    tokio::spawn(write(
        store.clone(),
        settings.retention,
        rx,
        live.clone(),
        recent.clone(),
    ));
    let log = EventLog {
        store,
        live,
        recent,
    };
    (Publisher { queue: Some(queue) }, log)
}

/// The writer: appends what is queued, a batch at a time, then broadcasts it.
async fn write(
    store: Arc<dyn Store>,
    retention: u64,
    mut rx: mpsc::Receiver<Event>,
    live: broadcast::Sender<Event>,
    recent: Recent,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // Held across the write, so that a reader of `recent` never sees the store ahead of it.
        let mut memory = recent.lock().await;
        match append(store.as_ref(), retention, &mut batch).await {
            Ok(()) => {
                if let Some(memory) = memory.as_mut() {
                    remember(memory, batch.iter().cloned());
                }
                drop(memory);
                for event in batch.drain(..) {
                    // No live reader is not an error.
                    let _ = live.send(event);
                }
            }
            Err(e) => {
                tracing::warn!(events = batch.len(), "events not written: {e}");
                batch.clear();
            }
        }
    }
}

/// Numbers `batch` after the counter and writes it with the counter in one transaction,
/// deleting what falls out of retention.
async fn append(store: &dyn Store, retention: u64, batch: &mut [Event]) -> Result<(), SchedError> {
    for _ in 0..APPEND_ATTEMPTS {
        let (last, expect) = match store.get(SEQ_KEY).await? {
            Some(kv) => (decode_seq(&kv.value)?, Expect::Revision(kv.mod_revision)),
            None => (0, Expect::Absent),
        };
        let first = last + 1;
        let end = last + batch.len() as u64;
        let mut ops = Vec::with_capacity(1 + 2 * batch.len());
        for (event, revision) in batch.iter_mut().zip(first..) {
            event.revision = revision;
            // Within retention of the batch's end: kept (a batch longer than retention
            // keeps its tail only; a transaction writes each key once).
            if revision + retention > end {
                ops.push(Op::Put {
                    key: entry_key(revision),
                    value: records::encode(event),
                    expect: Expect::Any,
                });
            }
            // The entry this one pushes out of retention, if written before this batch.
            if revision > retention && revision - retention < first {
                ops.push(Op::Delete {
                    key: entry_key(revision - retention),
                    expect: Expect::Any,
                });
            }
        }
        ops.push(Op::Put {
            key: SEQ_KEY.to_string(),
            value: end.to_be_bytes().to_vec(),
            expect,
        });
        match store.txn(ops).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(SchedError::Conflict {
        what: "appending to the event log".into(),
    })
}

/// Appends `events` to `recent` (skipping revisions it holds already: a first fill from the
/// store may have read them) and keeps the newest [`RECENT`].
fn remember(recent: &mut std::collections::VecDeque<Event>, events: impl Iterator<Item = Event>) {
    for event in events {
        if recent
            .back()
            .is_some_and(|last| last.revision >= event.revision)
        {
            continue;
        }
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(event);
    }
}

fn decode_seq(bytes: &[u8]) -> Result<u64, SchedError> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| SchedError::Corrupt {
        key: SEQ_KEY.into(),
        reason: format!("{} bytes, expected 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(raw))
}
