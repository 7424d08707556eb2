//! The crate's error: an I/O failure naming what was being done, or a missing or failed tool.

use std::io;

/// What went wrong building or booting a guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error while doing `what` (which names the file or tool).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A file, tool or kernel module that is not there.
    #[error("{0}")]
    Missing(String),
    /// A tool that ran and failed, or output that made no sense.
    #[error("{0}")]
    Failed(String),
}

/// The crate's result.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds "what was being done" to an I/O result.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}
