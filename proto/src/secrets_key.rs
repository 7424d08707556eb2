//! The secrets key file: the key-encryption key (KEK) the scheduler wraps secrets' data keys with, as written by the CLI and read by `berth-scheduler --secrets-key`.
//!
//! # Format
//!
//! One line of JSON, mode 0600:
//!
//! ```text
//! {"version":1,"id":"<16 hex digits>","key":"<base64 of 32 bytes>"}
//! ```
//!
//! The id is derived from the key (the first 8 bytes of its SHA-256, in hex), so it is stable
//! and needs no registry; it only names the key in sealed records, and 64 bits of a hash reveal
//! nothing usable about the key. [`SecretsKey::load`] checks it against the key, which catches a
//! hand-edited or truncated file.
//!
//! # Writing
//!
//! proto depends on no other berth crate, so it cannot call the project's atomic-write helper
//! (`berth_runtime::sys::fs::atomic_write_with`). [`SecretsKey::encode`] gives the file's
//! bytes and [`KEY_FILE_MODE`] its mode; the CLI writes them with that helper (create-only,
//! fsynced), as `berth certs` writes private keys.

use std::fmt;
use std::io::{self, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize as _, Zeroizing};

/// The length of a key-encryption key: AES-256.
pub const KEY_LEN: usize = 32;
/// The key file format this build writes and reads.
pub const KEY_FILE_VERSION: u32 = 1;
/// The key file's permission bits: owner read/write only.
pub const KEY_FILE_MODE: u32 = 0o600;
/// More than a key file ever holds; longer files fail to parse.
const MAX_FILE_BYTES: u16 = 4096;

/// What is wrong with a key file; each names the file, and none carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum SecretsKeyError {
    #[error(
        "secrets key {} does not exist (create it with `berth secret init-key`)",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("reading secrets key {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "secrets key {} has mode {mode:04o}: group and others must have no access (chmod 600 it)",
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("secrets key {}: not a berth key file: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error(
        "secrets key {}: unknown key file version {found} (this build reads version {KEY_FILE_VERSION})",
        path.display()
    )]
    Version { path: PathBuf, found: u32 },
    #[error("secrets key {}: the key is not valid base64", path.display())]
    Encoding { path: PathBuf },
    #[error(
        "secrets key {}: the key is {found} bytes, expected {KEY_LEN}",
        path.display()
    )]
    Length { path: PathBuf, found: usize },
    #[error(
        "secrets key {}: id {found:?} does not match the key (its id is {derived:?}); the file was edited or damaged",
        path.display()
    )]
    IdMismatch {
        path: PathBuf,
        found: String,
        derived: String,
    },
    #[error("generating a secrets key: the system random number generator failed: {0}")]
    Random(String),
}

/// A key-encryption key and its id. The bytes are wiped on drop and never printed.
#[derive(Clone)]
pub struct SecretsKey {
    id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The file's fields as serde reads them; `key` is wiped as soon as it is decoded.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    id: String,
    key: String,
}

impl SecretsKey {
    /// A new key from the system's random number generator.
    pub fn generate() -> Result<Self, SecretsKeyError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::getrandom(key.as_mut_slice())
            .map_err(|e| SecretsKeyError::Random(e.to_string()))?;
        Ok(Self::from_bytes(key))
    }

    /// The key with these bytes, with its derived id.
    pub fn from_bytes(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let id = key_id(&key);
        SecretsKey { id, key }
    }

    /// The key's id: the first 8 bytes of the SHA-256 of the key, in hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key's bytes, for the cipher that wraps data keys.
    pub fn material(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The key file's contents (write them with mode [`KEY_FILE_MODE`]).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut file = KeyFile {
            version: KEY_FILE_VERSION,
            id: self.id.clone(),
            key: BASE64.encode(self.key.as_slice()),
        };
        let mut text = Zeroizing::new(
            serde_json::to_vec(&file).expect("a struct of strings and a number serialises"),
        );
        file.key.zeroize();
        text.push(b'\n');
        text
    }

    /// Reads and checks the key file at `path`: it must exist, give group and others no
    /// access, and hold a known version, base64 of exactly [`KEY_LEN`] bytes and the id of
    /// that key.
    pub fn load(path: &Path) -> Result<Self, SecretsKeyError> {
        let read_err = |source: io::Error| match source.kind() {
            io::ErrorKind::NotFound => SecretsKeyError::Missing {
                path: path.to_owned(),
            },
            _ => SecretsKeyError::Read {
                path: path.to_owned(),
                source,
            },
        };
        // The mode is checked on the open file, so the file read is the file checked.
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretsKeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        // A key file is under 100 bytes; reading at most a buffer's worth means the buffer
        // never grows, so no unwiped copy of the key is left behind by a reallocation.
        let mut text = Zeroizing::new(Vec::with_capacity(usize::from(MAX_FILE_BYTES)));
        file.take(u64::from(MAX_FILE_BYTES))
            .read_to_end(&mut text)
            .map_err(read_err)?;
        Self::decode(path, &text)
    }

    /// Parses a key file's contents; `path` is only for the error messages.
    pub fn decode(path: &Path, text: &[u8]) -> Result<Self, SecretsKeyError> {
        let format = |reason: String| SecretsKeyError::Format {
            path: path.to_owned(),
            reason,
        };
        // Check the version before the other fields, so that a future format with other
        // fields is reported as an unknown version rather than as a malformed file.
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| format(e.to_string()))?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(KEY_FILE_VERSION) => {}
            Some(v) => {
                return Err(SecretsKeyError::Version {
                    path: path.to_owned(),
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                });
            }
            None => return Err(format("no numeric \"version\" field".into())),
        }
        let file: KeyFile = serde_json::from_value(value).map_err(|e| format(e.to_string()))?;
        let key_b64 = Zeroizing::new(file.key);
        let mut decoded = Zeroizing::new(Vec::with_capacity(KEY_LEN + 3));
        BASE64
            .decode_vec(key_b64.trim().as_bytes(), &mut decoded)
            .map_err(|_| SecretsKeyError::Encoding {
                path: path.to_owned(),
            })?;
        let bytes: [u8; KEY_LEN] =
            decoded
                .as_slice()
                .try_into()
                .map_err(|_| SecretsKeyError::Length {
                    path: path.to_owned(),
                    found: decoded.len(),
                })?;
        let key = Self::from_bytes(Zeroizing::new(bytes));
        if key.id != file.id {
            return Err(SecretsKeyError::IdMismatch {
                path: path.to_owned(),
                found: file.id,
                derived: key.id,
            });
        }
        Ok(key)
    }
}

fn key_id(key: &[u8; KEY_LEN]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

#[cfg(test)]
#[path = "secrets_key_tests.rs"]
mod tests;
