//! A [`Store`] that times its writes into the store write latency histogram.

use std::sync::Arc;
use std::time::Instant;

use super::Metrics;
use crate::store::{Expect, KeyValue, Op, Revision, Store, StoreError, WatchStream};

/// Delegates every call to `inner`; puts, deletes and transactions are timed (failed ones too:
/// a slow refusal is still a slow write).
#[derive(Debug)]
pub(crate) struct TimedStore {
    inner: Arc<dyn Store>,
    metrics: Metrics,
}

impl TimedStore {
    pub(crate) fn new(inner: Arc<dyn Store>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl Store for TimedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.inner.list(prefix).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<Revision, StoreError> {
        let started = Instant::now();
        let out = self.inner.put(key, value, expect).await;
        self.metrics.store_write("put", started.elapsed());
        out
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<Revision, StoreError> {
        let started = Instant::now();
        let out = self.inner.delete(key, expect).await;
        self.metrics.store_write("delete", started.elapsed());
        out
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        let started = Instant::now();
        let out = self.inner.txn(ops).await;
        self.metrics.store_write("txn", started.elapsed());
        out
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, after).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
}
