//! Store keys and records of config and secret versions: `/configs/<name>/<version:020>` and `/secrets/<name>/<version:020>`, one prost record per version.
//!
//! # How a sealed secret is stored
//!
//! As the `sealed` field of a [`FileVersion`], a prost message ([`SealedRecord`]) with the
//! same six fields as [`SealedSecret`]: records are prost everywhere else in the store
//! (records.rs), the bytes stay raw (no base64 doubling a 1 MiB value), and the key id sits
//! in a field of its own, so the start-up check and key rotation read it without decrypting.
//! The serde form of `SealedSecret` stays for the secrets module's own tests and tools.

use prost::Message;

use crate::secrets::SealedSecret;

use super::Kind;

/// `/configs/<name>/<version, zero-padded so keys sort by number>` (or `/secrets/...`).
pub(crate) fn version_key(kind: Kind, name: &str, version: u64) -> String {
    format!("{}{name}/{version:020}", kind.prefix())
}

/// Every version of `name`: `/configs/<name>/` (the slash keeps `app` from matching `app-2`).
pub(crate) fn versions_prefix(kind: Kind, name: &str) -> String {
    format!("{}{name}/", kind.prefix())
}

/// A key rotation under way: written before its first transaction and deleted after its
/// last, so a scheduler that starts with the old key finishes a rotation that was cut short.
pub(crate) const ROTATION: &str = "/secrets-rotation";

/// The name and version a version key names, if it is one.
pub(crate) fn parse_key(kind: Kind, key: &str) -> Option<(&str, u64)> {
    let (name, version) = key.strip_prefix(kind.prefix())?.rsplit_once('/')?;
    Some((name, version.parse().ok()?))
}

/// One version of a config or secret. A config carries its content; a secret only its
/// sealed form (never plaintext, never a digest of it: a hash of a short password is a
/// dictionary attack's oracle).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct FileVersion {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub version: u64,
    #[prost(int64, tag = "3")]
    pub created_at_ms: i64,
    /// The value's length in bytes.
    #[prost(uint64, tag = "4")]
    pub size_bytes: u64,
    /// Configs only: lower-case hex SHA-256 of the content.
    #[prost(string, tag = "5")]
    pub sha256: String,
    /// Configs only: the content.
    #[prost(bytes = "vec", tag = "6")]
    pub data: Vec<u8>,
    /// Secrets only: the value sealed under a data key wrapped by the key-encryption key.
    #[prost(message, optional, tag = "7")]
    pub sealed: Option<SealedRecord>,
}

/// [`SealedSecret`] as a prost message (see the module's doc).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SealedRecord {
    #[prost(uint32, tag = "1")]
    pub format: u32,
    #[prost(string, tag = "2")]
    pub kek_id: String,
    #[prost(bytes = "vec", tag = "3")]
    pub dek_nonce: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub wrapped_dek: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub nonce: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    pub ciphertext: Vec<u8>,
}

impl From<SealedSecret> for SealedRecord {
    fn from(s: SealedSecret) -> Self {
        Self {
            format: s.format,
            kek_id: s.kek_id,
            dek_nonce: s.dek_nonce,
            wrapped_dek: s.wrapped_dek,
            nonce: s.nonce,
            ciphertext: s.ciphertext,
        }
    }
}

impl From<SealedRecord> for SealedSecret {
    fn from(s: SealedRecord) -> Self {
        Self {
            format: s.format,
            kek_id: s.kek_id,
            dek_nonce: s.dek_nonce,
            wrapped_dek: s.wrapped_dek,
            nonce: s.nonce,
            ciphertext: s.ciphertext,
        }
    }
}

/// The rotation under way (at [`ROTATION`]).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RotationRecord {
    #[prost(string, tag = "1")]
    pub old_key_id: String,
    #[prost(string, tag = "2")]
    pub new_key_id: String,
    /// The new key's file on the scheduler's host.
    #[prost(string, tag = "3")]
    pub new_key_file: String,
}
