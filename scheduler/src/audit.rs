//! The audit log: one entry per mutating call (Apply, Approve, Reject, Rollback, Scale, Delete,
//! Promote, and config/secret updates that roll deployments), refused calls included, kept in
//! the store under `/audit/entries/<seq>`. `seq` comes from a counter written in the same
//! transaction as the entry, so it has no gaps or duplicates under concurrency, on every backend.

use crate::environments::key::normalize;
use std::sync::Arc;

use berth_proto::v1::{AuditEntry, ListAuditRequest};

use crate::auth::Caller;
use crate::clock::now_ms;
use crate::deployments::{Deployments, stable_release};
use crate::error::SchedError;
use crate::events::Publisher;
use crate::records;
use crate::release_id::{release_id, release_spec};
use crate::store::{Expect, Op, Store, StoreError};

/// `/audit/seq`: the last seq used (8 bytes, big endian).
const SEQ_KEY: &str = "/audit/seq";
/// `/audit/entries/<seq, zero-padded so keys sort by number>`
const ENTRIES: &str = "/audit/entries/";

/// Appends lose a race only to another append; each loss means someone else progressed, so
/// this bound is only reached by a store that keeps failing.
const APPEND_ATTEMPTS: usize = 1000;

fn entry_key(seq: u64) -> String {
    format!("{ENTRIES}{seq:020}")
}

/// Who made a call: the certificate's CN or the token's name, "local" when the scheduler runs
/// without auth (no caller in the request's extensions).
pub fn who(extensions: &http::Extensions) -> String {
    extensions
        .get::<Caller>()
        .map_or_else(|| "local".to_string(), |c| c.name.clone())
}

/// The outcome field for a call's result: "ok", or "error: <the message the caller saw>".
pub fn outcome<T>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(status) => format!("error: {}", status.message()),
    }
}

/// The audit log in a store.
#[derive(Debug, Clone)]
pub struct Audit {
    store: Arc<dyn Store>,
    /// Every entry written is also an event (approvals and promotions by their own kinds).
    events: Publisher,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            events: Publisher::default(),
        }
    }

    /// Publishes every entry written to `events` as well.
    pub(crate) fn with_events(mut self, events: Publisher) -> Self {
        self.events = events;
        self
    }

    /// Appends `entry` with the next seq (and `at_ms` now when unset); returns the seq.
    /// This is what every mutating handler calls (Promote included): fill `who` (see [`who`]),
    /// `action`, `environment`, `app`, the from/to release and revision, `outcome` and
    /// `detail`. An entry never carries a secret's value: callers put names and versions only.
    pub async fn append(&self, mut entry: AuditEntry) -> Result<u64, SchedError> {
        if entry.at_ms == 0 {
            entry.at_ms = now_ms();
        }
        for _ in 0..APPEND_ATTEMPTS {
            let (last, expect) = match self.store.get(SEQ_KEY).await? {
                Some(kv) => (decode_seq(&kv.value)?, Expect::Revision(kv.mod_revision)),
                None => (0, Expect::Absent),
            };
            entry.seq = last + 1;
            let ops = vec![
                Op::Put {
                    key: SEQ_KEY.to_string(),
                    value: entry.seq.to_be_bytes().to_vec(),
                    expect,
                },
                Op::Put {
                    key: entry_key(entry.seq),
                    value: records::encode(&entry),
                    expect: Expect::Absent,
                },
            ];
            match self.store.txn(ops).await {
                Ok(_) => {
                    self.events.audit(&entry);
                    return Ok(entry.seq);
                }
                // Another append took this seq first: read the counter again.
                Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SchedError::Conflict {
            what: "appending to the audit log".into(),
        })
    }

    /// Appends `entry`, logging (not returning) a failure: the call it records has already
    /// happened, and its caller must learn that call's outcome, not the log's.
    pub async fn record(&self, entry: AuditEntry) {
        let action = entry.action.clone();
        if let Err(e) = self.append(entry).await {
            tracing::error!(action, "audit entry not written: {e}");
        }
    }

    /// One "apply" entry per deployment in `rolled` (qualified names) that a config or secret
    /// update (`detail`: "config NAME v3") moved to a new revision.
    pub(crate) async fn record_rolled(
        &self,
        deployments: &Deployments,
        who: &str,
        detail: &str,
        rolled: &[String],
    ) {
        for name in rolled {
            let Ok((rec, _)) = deployments.load(name).await else {
                continue;
            };
            let Some(spec) = rec.spec.as_ref() else {
                continue;
            };
            self.record(AuditEntry {
                who: who.to_string(),
                action: "apply".into(),
                environment: normalize(&spec.environment).to_string(),
                app: release_spec(spec).name,
                from_release: stable_release(&rec),
                to_release: release_id(spec),
                from_revision: rec.stable_revision,
                to_revision: rec.revision,
                outcome: "ok".into(),
                detail: detail.to_string(),
                ..Default::default()
            })
            .await;
        }
    }

    /// The entries `req` asks for, oldest first: filtered by environment ("default" matches
    /// entries of the default environment) and app, after `after_seq`, the last `limit`.
    pub async fn list(&self, req: &ListAuditRequest) -> Result<Vec<AuditEntry>, SchedError> {
        let (kvs, _) = self.store.list(ENTRIES).await?;
        let env = normalize(&req.environment);
        let mut entries = Vec::new();
        for kv in kvs {
            let e: AuditEntry = records::decode(&kv.key, &kv.value)?;
            let keep = e.seq > req.after_seq
                && (req.environment.is_empty() || normalize(&e.environment) == env)
                && (req.app.is_empty() || e.app == req.app);
            if keep {
                entries.push(e);
            }
        }
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        if limit != 0 && entries.len() > limit {
            entries.drain(..entries.len() - limit);
        }
        Ok(entries)
    }
}

fn decode_seq(bytes: &[u8]) -> Result<u64, SchedError> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| {
        SchedError::from(StoreError::Backend(format!(
            "{SEQ_KEY}: {} bytes, expected 8",
            bytes.len()
        )))
    })?;
    Ok(u64::from_be_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;

    fn entry(app: &str, env: &str) -> AuditEntry {
        AuditEntry {
            who: "local".into(),
            action: "apply".into(),
            app: app.into(),
            environment: env.into(),
            outcome: "ok".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn list_filters_by_env_app_after_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let audit = Audit::new(store);
        for (app, env) in [
            ("a", ""),
            ("b", "staging"),
            ("a", "staging"),
            ("a", "default"),
        ] {
            audit.append(entry(app, env)).await.unwrap();
        }
        let seqs = async |req: ListAuditRequest| -> Vec<u64> {
            audit
                .list(&req)
                .await
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        let all = audit.list(&ListAuditRequest::default()).await.unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let req = ListAuditRequest {
            environment: "default".into(),
            ..Default::default()
        };
        assert_eq!(
            seqs(req).await,
            [1, 4],
            "empty and \"default\" are the same environment"
        );
        let req = ListAuditRequest {
            app: "a".into(),
            limit: 2,
            ..Default::default()
        };
        assert_eq!(seqs(req).await, [3, 4], "the newest two, oldest first");
        let req = ListAuditRequest {
            after_seq: 3,
            ..Default::default()
        };
        assert_eq!(audit.list(&req).await.unwrap().len(), 1);
        assert!(all.iter().all(|e| e.at_ms > 0));
    }
}
