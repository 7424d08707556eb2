//! Leader election among schedulers sharing one etcd: etcd's election API on a lease that this
//! process keeps alive. The leader's value is its advertised URL, so standbys can point
//! clients and agents at it.
//!
//! A leader stops acting as one as soon as it cannot prove its lease is alive: after two
//! thirds of the lease's TTL without a successful keep-alive it reports the leadership lost,
//! before etcd lets the lease lapse and another scheduler win. Writes are fenced as well (see
//! [`EtcdStore::fenced`]): even a leader that missed that deadline cannot write once its
//! election key is gone.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, LeaderKey, ResignOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::StoreError;
use crate::store::etcd::EtcdStore;

/// The election's name under the store's prefix.
const ELECTION: &str = "/election/scheduler";

/// How long a looked-up leader is taken as current: standbys ask for every call they forward
/// or turn away, and a leader changes only when one dies (clients retry across that anyway).
const LEADER_CACHE: Duration = Duration::from_millis(500);

/// When the leader was looked up, and its URL then (`None`: there was no leader).
type CachedLeader = Option<(Instant, Option<String>)>;

/// One scheduler's candidacy.
#[derive(Debug, Clone)]
pub struct Election {
    store: EtcdStore,
    name: String,
    /// This scheduler's advertised URL: the leader's value in etcd.
    url: String,
    ttl: Duration,
    /// The last leader looked up, and when.
    cached: Arc<std::sync::Mutex<CachedLeader>>,
}

/// Holding the leadership: the election key and revision (the write fence) and a signal that
/// turns true when the lease can no longer be kept.
#[derive(Debug)]
pub struct Leadership {
    key: LeaderKey,
    lost: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl Leadership {
    /// The election key (a full etcd key) and its create revision: the fence of the leader's
    /// writes.
    pub fn fence(&self) -> (&[u8], i64) {
        (self.key.key(), self.key.rev())
    }

    /// Turns true when the leadership is lost (the lease could not be kept alive).
    pub fn watch_lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("etcd {what}: {e}"))
}

impl Election {
    /// A candidacy for `store`'s cluster, advertising `url`, on leases of `ttl` (at least 2 s:
    /// etcd's minimum).
    pub fn new(store: EtcdStore, url: String, ttl: Duration) -> Self {
        Self {
            name: format!("{}{ELECTION}", store.prefix()),
            store,
            url,
            ttl: ttl.max(Duration::from_secs(2)),
            cached: Arc::default(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `f` against each member's client (the last answering first) until one succeeds.
    async fn on_any<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = String::from("no members");
        for (endpoint, client) in self.store.clients() {
            match tokio::time::timeout(Duration::from_secs(5), f(client)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => last = format!("{endpoint}: {e}"),
                Err(_) => last = format!("{endpoint}: no answer within 5s"),
            }
        }
        Err(unavailable(what, last))
    }

    /// Waits until this scheduler leads. Survives members going away while it waits: the
    /// lease is kept alive by a task of its own, and a campaign cut off is resumed on another
    /// member with the same lease (etcd treats that as the same candidate).
    pub async fn campaign(&self) -> Result<Leadership, StoreError> {
        self.clear_own_stale_key().await;
        loop {
            let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
            let lease = self
                .on_any("lease grant", |mut c| async move {
                    c.lease_grant(ttl, None).await
                })
                .await?
                .id();
            let (lost_tx, lost) = watch::channel(false);
            let keeper = tokio::spawn(keep_alive(
                self.store.clone(),
                lease,
                self.ttl,
                Arc::new(lost_tx),
            ));
            let won = loop {
                if *lost.borrow() {
                    break None;
                }
                let mut waiting = lost.clone();
                let campaign = async {
                    let mut last = String::new();
                    for (endpoint, mut client) in self.store.clients() {
                        match client
                            .campaign(self.name.as_str(), self.url.as_str(), lease)
                            .await
                        {
                            Ok(mut response) => return Ok(response.take_leader()),
                            Err(e) => last = format!("{endpoint}: {e}"),
                        }
                    }
                    Err(last)
                };
                tokio::select! {
                    result = campaign => match result {
                        Ok(Some(key)) => break Some(key),
                        Ok(None) => tracing::warn!("etcd campaign answered without a leader key"),
                        Err(e) => tracing::warn!("etcd campaign: {e}; retrying"),
                    },
                    _ = waiting.wait_for(|lost| *lost) => break None,
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            match won {
                Some(key) => {
                    tracing::info!(url = %self.url, lease, revision = key.rev(), "elected leader");
                    return Ok(Leadership { key, lost, keeper });
                }
                None => {
                    keeper.abort();
                    tracing::warn!(lease, "the candidacy's lease lapsed; campaigning again");
                }
            }
        }
    }

    /// A leader key with this scheduler's own URL is a previous run's (this process holds the
    /// listener that URL names, so that run is dead): revoke its lease rather than wait for it
    /// to lapse, so a restarted lone scheduler leads again at once.
    async fn clear_own_stale_key(&self) {
        let Some((url, lease)) = self.leader_record().await else {
            return;
        };
        if url != self.url || lease == 0 {
            return;
        }
        tracing::info!(lease, url = %self.url, "revoking a previous run's leadership of this URL");
        if let Err(e) = self
            .on_any("lease revoke", |mut c| async move {
                c.lease_revoke(lease).await.map(|_| ())
            })
            .await
        {
            tracing::warn!("revoking the stale leader lease: {e}");
        }
    }

    /// The leader's URL and lease, asked of etcd now; `None` without a leader (or an answer).
    async fn leader_record(&self) -> Option<(String, i64)> {
        let name = self.name.clone();
        let response = self
            .on_any("leader", |mut c| {
                let name = name.clone();
                async move { c.leader(name).await }
            })
            .await
            .ok()?;
        let kv = response.kv()?;
        let url = String::from_utf8(kv.value().to_vec()).ok()?;
        Some((url, kv.lease()))
    }

    /// The leader's URL, if there is a leader: looked up at most every [`LEADER_CACHE`].
    pub async fn leader(&self) -> Option<String> {
        if let Some((at, leader)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            && at.elapsed() < LEADER_CACHE
        {
            return leader;
        }
        let leader = self.leader_record().await.map(|(url, _)| url);
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), leader.clone()));
        leader
    }

    /// Gives the leadership up at once (a clean stop), so a standby need not wait for the
    /// lease to lapse.
    pub async fn resign(&self, leadership: Leadership) {
        let key = leadership.key.clone();
        let lease = key.lease();
        let resigned = self
            .on_any("resign", |mut c| {
                let key = key.clone();
                async move {
                    c.resign(Some(ResignOptions::new().with_leader(key)))
                        .await
                        .map(|_| ())
                }
            })
            .await;
        if let Err(e) = resigned {
            tracing::warn!("resigning the leadership: {e}");
        }
        let _ = self
            .on_any("lease revoke", |mut c| async move {
                c.lease_revoke(lease).await.map(|_| ())
            })
            .await;
        drop(leadership);
    }
}

/// Keeps `lease` alive every third of `ttl`, on whichever member answers; sets `lost` when no
/// keep-alive succeeded for two thirds of `ttl` or etcd says the lease is gone.
async fn keep_alive(store: EtcdStore, lease: i64, ttl: Duration, lost: Arc<watch::Sender<bool>>) {
    let period = ttl / 3;
    let mut last_ok = Instant::now();
    let mut stream: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)> = None;
    loop {
        if last_ok.elapsed() >= period * 2 {
            tracing::error!(
                lease,
                "no lease keep-alive for {:?}: leadership lost",
                period * 2
            );
            let _ = lost.send(true);
            return;
        }
        if stream.is_none() {
            for (endpoint, mut client) in store.clients() {
                match tokio::time::timeout(period, client.lease_keep_alive(lease)).await {
                    Ok(Ok(pair)) => {
                        stream = Some(pair);
                        break;
                    }
                    Ok(Err(e)) => tracing::warn!(%endpoint, "lease keep-alive stream: {e}"),
                    Err(_) => tracing::warn!(%endpoint, "lease keep-alive stream: no answer"),
                }
            }
        }
        if let Some((keeper, responses)) = stream.as_mut() {
            let round = async {
                keeper.keep_alive().await?;
                responses.message().await
            };
            match tokio::time::timeout(period, round).await {
                Ok(Ok(Some(response))) if response.ttl() > 0 => last_ok = Instant::now(),
                Ok(Ok(Some(_))) => {
                    tracing::error!(lease, "the lease expired: leadership lost");
                    let _ = lost.send(true);
                    return;
                }
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => stream = None,
            }
        }
        if stream.is_some() {
            tokio::time::sleep_until(last_ok + period).await;
        } else {
            // No member took the stream: try again soon, the deadline above still runs.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
