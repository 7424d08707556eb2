//! Reading the event log: the kept events after a revision, then (when following) the live
//! ones, with none missed or repeated in between, and a reader that falls behind dropped with
//! the revision to resume from.

use berth_proto::v1::{Event, EventsRequest};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

use super::{ENTRIES, EventLog, RECENT, SEQ_KEY, decode_seq};
use crate::environments::key::normalize;
use crate::error::SchedError;
use crate::records;

/// Events (or the error that ended the stream) as a reader gets them.
pub(crate) type Feed = mpsc::Receiver<Result<Event, SchedError>>;

/// Events handed to a reader's stream ahead of it.
const READ_AHEAD: usize = 64;

impl EventLog {
    /// The events `req` asks for, from a task of their own. The live subscription starts
    /// before the kept events are read, so nothing written in between is missed; what both
    /// hold is sent once.
    pub(crate) async fn subscribe(&self, req: &EventsRequest) -> Result<Feed, SchedError> {
        let live = req.follow.then(|| self.live.subscribe());
        let kept = self.after(req.since_revision).await?;
        let env = (!req.environment.is_empty()).then(|| normalize(&req.environment).to_string());
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let reader = Reader {
            log: self.store.clone(),
            env,
            last: req.since_revision,
            tx,
        };
        tokio::spawn(reader.run(kept, live));
        Ok(rx)
    }

    /// The latest revision written (0 for an empty log).
    #[cfg(test)]
    pub(crate) async fn latest(&self) -> Result<u64, SchedError> {
        latest(self.store.as_ref()).await
    }

    /// The kept events after `since`, oldest first; refuses a `since` ahead of the log, or one
    /// whose next events retention has already dropped (0 means "from the oldest kept").
    pub(crate) async fn after(&self, since: u64) -> Result<Vec<Event>, SchedError> {
        after(self.store.as_ref(), since).await
    }

    /// The newest `limit` kept events of deployment `name` in environment `env` (container
    /// states, rollout steps, approvals, promotions, audit entries), newest first: what a
    /// deployment's page shows. Read from the leader's last [`RECENT`] events in memory, so
    /// older ones of a quiet deployment are not shown.
    pub(crate) async fn of_deployment(
        &self,
        env: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<Event>, SchedError> {
        let env = normalize(env);
        let mut recent = self.recent.lock().await;
        if recent.is_none() {
            // First use: the newest kept events from the store; the writer adds the rest.
            let (kvs, _) = self.store.list(ENTRIES).await?;
            let mut filled = std::collections::VecDeque::with_capacity(RECENT);
            let newest = kvs.iter().skip(kvs.len().saturating_sub(RECENT));
            super::remember(
                &mut filled,
                newest
                    .map(|kv| records::decode::<Event>(&kv.key, &kv.value))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter(),
            );
            *recent = Some(filled);
        }
        let recent = recent.as_ref().expect("filled above");
        Ok(recent
            .iter()
            .rev()
            .filter(|e| e.environment == env && e.deployment == name)
            .take(limit)
            .cloned()
            .collect())
    }
}

async fn latest(store: &dyn crate::store::Store) -> Result<u64, SchedError> {
    match store.get(SEQ_KEY).await? {
        Some(kv) => decode_seq(&kv.value),
        None => Ok(0),
    }
}

async fn after(store: &dyn crate::store::Store, since: u64) -> Result<Vec<Event>, SchedError> {
    let latest = latest(store).await?;
    if since > latest {
        return Err(SchedError::invalid(
            "since_revision",
            format!("{since} is ahead of the event log, whose latest revision is {latest}"),
        ));
    }
    let (kvs, _) = store.list(ENTRIES).await?;
    let mut events = Vec::with_capacity(kvs.len());
    for kv in kvs {
        events.push(records::decode::<Event>(&kv.key, &kv.value)?);
    }
    let oldest = events.first().map_or(latest + 1, |e| e.revision);
    if since != 0 && since + 1 < oldest {
        return Err(SchedError::invalid(
            "since_revision",
            format!(
                "events {} to {} are no longer kept (the oldest kept is {oldest}); \
                 resume with --since {} to skip them",
                since + 1,
                oldest - 1,
                oldest - 1
            ),
        ));
    }
    events.retain(|e| e.revision > since);
    Ok(events)
}

/// One reader's task.
struct Reader {
    log: std::sync::Arc<dyn crate::store::Store>,
    /// Only this environment's events, when set.
    env: Option<String>,
    /// The last revision sent or passed over: everything up to it is done.
    last: u64,
    tx: mpsc::Sender<Result<Event, SchedError>>,
}

impl Reader {
    async fn run(mut self, kept: Vec<Event>, live: Option<broadcast::Receiver<Event>>) {
        if !self.send_all(kept).await {
            return;
        }
        let Some(mut live) = live else { return };
        loop {
            let received = tokio::select! {
                received = live.recv() => received,
                // The client went away.
                () = self.tx.closed() => return,
            };
            let go_on = match received {
                Ok(event) if event.revision <= self.last => continue,
                Ok(event) if event.revision == self.last + 1 => self.send_all(vec![event]).await,
                // Missed between reading the log and the broadcast: read them from the store.
                Ok(_) => match after(self.log.as_ref(), self.last).await {
                    Ok(missing) => self.send_all(missing).await,
                    Err(e) => self.end(e).await,
                },
                Err(RecvError::Lagged(behind)) => {
                    let e = SchedError::SlowConsumer {
                        behind,
                        resume: self.last,
                    };
                    self.end(e).await
                }
                Err(RecvError::Closed) => {
                    let e = SchedError::Unavailable(format!(
                        "this scheduler stopped serving events (it no longer leads); \
                         resume with --since {}",
                        self.last
                    ));
                    self.end(e).await
                }
            };
            if !go_on {
                return;
            }
        }
    }

    /// Sends the events of `events` past `last` that the reader wants; false once the
    /// client is gone.
    async fn send_all(&mut self, events: Vec<Event>) -> bool {
        for event in events {
            if event.revision <= self.last {
                continue;
            }
            self.last = event.revision;
            let wanted = self
                .env
                .as_ref()
                .is_none_or(|env| &event.environment == env);
            if wanted && self.tx.send(Ok(event)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ends the stream with `e`: always false (the reader stops).
    async fn end(&self, e: SchedError) -> bool {
        tracing::info!(resume = self.last, "event stream ended: {e}");
        let _ = self.tx.send(Err(e)).await;
        false
    }
}
