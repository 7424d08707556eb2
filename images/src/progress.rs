//! Progress reporting for long work (pulls, unpacks): the library reports, the caller draws.

/// Receives progress of work on named items (layers, blobs). Implementations must be cheap:
/// `advanced` is called for every chunk read.
pub trait Progress: Send + Sync {
    /// Work on `item` began; `total` is its size in bytes when known.
    fn started(&self, item: &str, total: Option<u64>);
    /// `bytes` more bytes of `item` were processed.
    fn advanced(&self, item: &str, bytes: u64);
    /// `item` is done.
    fn finished(&self, item: &str);
    /// A one-line note ("layer sha256:ab.. already present").
    fn note(&self, message: &str);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn started(&self, _: &str, _: Option<u64>) {}
    fn advanced(&self, _: &str, _: u64) {}
    fn finished(&self, _: &str) {}
    fn note(&self, _: &str) {}
}
