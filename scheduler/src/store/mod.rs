//! The cluster state store: a small key-value interface with revisions, optimistic
//! concurrency and watches, so that backends (the embedded redb file, etcd) are
//! interchangeable. Every backend passes the conformance suite (`conformance`, behind the
//! feature of that name: backends' tests use it, the daemon does not carry it).

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod etcd;
pub mod redb;

use std::pin::Pin;

use futures::Stream;

/// The store's logical clock: grows by one with every committed write.
pub type Revision = u64;

/// The most writes one transaction may hold on every backend (etcd refuses more than 128 by
/// default, one of which a leader's fence takes). Writers of independent keys split larger
/// batches with [`txn_chunked`].
pub const MAX_TXN_OPS: usize = 100;

/// A stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the write that created the key (kept across updates).
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
}

/// What a write expects to find, checked atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is there.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist with this mod revision.
    Revision(Revision),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        expect: Expect,
    },
    Delete {
        key: String,
        expect: Expect,
    },
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, mod_revision: Revision },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            Self::Put(kv) => &kv.key,
            Self::Delete { key, .. } => key,
        }
    }
    pub fn revision(&self) -> Revision {
        match self {
            Self::Put(kv) => kv.mod_revision,
            Self::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// An expectation failed: someone else wrote first.
    #[error("conflict on {key}: expected {expected:?}, found revision {found:?}")]
    Conflict {
        key: String,
        expected: Expect,
        found: Option<Revision>,
    },
    /// A watch asked for history the store no longer keeps: list again, then watch.
    #[error("revision {requested} is compacted (the oldest kept is {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// The backend cannot be reached now; retrying may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend failed (I/O, corruption): the message names what.
    #[error("store: {0}")]
    Backend(String),
    /// A write fenced by a leadership this process no longer holds (another scheduler leads):
    /// nothing was written, and this process must stop acting as the leader.
    #[error("not the leader: {0}")]
    NotLeader(String),
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
}

/// The interface every backend implements. Writes are durable before they return.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Every key under `prefix` (sorted by key), and the revision the list was taken at.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;
    /// Writes `value` if `expect` holds; returns the write's revision.
    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<Revision, StoreError>;
    /// Deletes `key` if `expect` holds (deleting a missing key with `Any` is not an error);
    /// returns the revision.
    async fn delete(&self, key: &str, expect: Expect) -> Result<Revision, StoreError>;
    /// All of `ops` or none: one revision for the lot. Any failed expectation fails the
    /// transaction with that Conflict.
    async fn txn(&self, ops: Vec<Op>) -> Result<Revision, StoreError>;
    /// Changes to keys under `prefix` with a revision above `after`, in revision order:
    /// history first (Compacted if it is no longer kept), then live changes.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;
    /// The current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;
}

/// Every backend's key rule: keys are not empty.
fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: "keys must not be empty",
        });
    }
    Ok(())
}

/// Every backend's transaction rule: valid keys, each written once.
fn validate_ops(ops: &[Op]) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    for op in ops {
        let key = match op {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        };
        check_key(key)?;
        if !seen.insert(key.as_str()) {
            return Err(StoreError::InvalidKey {
                key: key.clone(),
                reason: "a transaction may write each key once",
            });
        }
    }
    Ok(())
}

/// Writes `ops` in transactions of at most [`MAX_TXN_OPS`]: for batches of independent writes
/// (each op's expectation is its own), where all-or-nothing across the batch is not needed.
pub async fn txn_chunked(store: &dyn Store, ops: Vec<Op>) -> Result<Revision, StoreError> {
    let mut revision = 0;
    for chunk in ops.chunks(MAX_TXN_OPS) {
        revision = store.txn(chunk.to_vec()).await?;
    }
    Ok(revision)
}
