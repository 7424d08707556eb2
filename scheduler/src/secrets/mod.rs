//! Secrets at rest (issue 15): envelope encryption of secret values with AES-256-GCM; `crate::files` keeps the sealed records in the store and delivers the values.
//!
//! Each secret version gets a fresh random data key (DEK) that encrypts the value; the DEK is
//! wrapped by the key-encryption key (KEK, [`SecretsKey`], read from `--secrets-key`). A
//! [`SealedSecret`] is what the store will keep: the KEK's id, both nonces, the wrapped DEK and
//! the ciphertext. [`rewrap`] moves a record to a new KEK (`berth secret rotate-key`) without
//! touching the value's ciphertext. See [`envelope`] for the associated data that binds a
//! record to its secret's name and version.

pub mod envelope;
pub mod record;

pub use berth_proto::secrets_key::SecretsKey;
pub use envelope::{open, rewrap, seal};
pub use record::{RECORD_FORMAT, SealedSecret};

/// The largest secret value, as issue 15 sets it for configs and secrets: 1 MiB.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Why a secret could not be sealed, opened or re-wrapped. No variant carries plaintext or key
/// bytes; a failed authentication says only that.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "secret {name:?}: the value is {size} bytes, over the limit of {MAX_VALUE_BYTES} bytes (1 MiB)"
    )]
    TooLarge { name: String, size: usize },
    #[error(
        "secret record format {found} is not supported (this scheduler reads format {RECORD_FORMAT})"
    )]
    UnsupportedFormat { found: u32 },
    #[error(
        "secret record was sealed with key-encryption key {id:?}, which is not loaded (loaded: {loaded})"
    )]
    UnknownKey { id: String, loaded: String },
    #[error("malformed secret record: {field} is {len} bytes, expected {expected}")]
    Malformed {
        field: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("secret record: authentication failed")]
    AuthenticationFailed,
    #[error("secret record: encryption failed")]
    EncryptionFailed,
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

#[cfg(test)]
mod tests;
