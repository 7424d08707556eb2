//! seal, open and rewrap: AES-256-GCM under a per-version data key, itself wrapped by the KEK.
//!
//! # Associated data
//!
//! Both encryptions authenticate a context string besides their message, so that a record
//! opens only where it was sealed (big-endian integers, lengths before strings):
//!
//! - the value: `"berth-secret-value\0" ‖ u32 format ‖ u32 len(name) ‖ name ‖ u64 version`, so
//!   a record copied to another secret name or version fails to open;
//! - the data key: `"berth-secret-dek\0" ‖ u32 format ‖ u32 len(kek_id) ‖ kek_id`, so the
//!   recorded key id cannot be changed. It names no secret, which lets [`rewrap`] work on a
//!   record alone; a wrapped key moved to another record unwraps, but its key then fails to
//!   open that record's value.
//!
//! Nonces are 96 bits from the system's random number generator. A fresh data key per
//! version means a value nonce is used with its key exactly once; KEK nonces are random, and
//! a KEK wraps one key per secret version, far below the 2^32 messages at which random 96-bit
//! nonces start to risk a collision.

use aes_gcm::aead::{Aead, Nonce, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use berth_proto::secrets_key::{KEY_LEN, SecretsKey};
use zeroize::Zeroizing;

use super::record::{RECORD_FORMAT, SealedSecret};
use super::{MAX_VALUE_BYTES, SecretsError};

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const VALUE_LABEL: &[u8] = b"berth-secret-value\0";
const DEK_LABEL: &[u8] = b"berth-secret-dek\0";

/// Encrypts `plaintext` as version `version` of secret `name` under a fresh data key wrapped
/// by `kek`. Values over [`MAX_VALUE_BYTES`] are refused.
pub fn seal(
    kek: &SecretsKey,
    name: &str,
    version: u64,
    plaintext: &[u8],
) -> Result<SealedSecret, SecretsError> {
    if plaintext.len() > MAX_VALUE_BYTES {
        return Err(SecretsError::TooLarge {
            name: name.to_owned(),
            size: plaintext.len(),
        });
    }
    let mut dek = Zeroizing::new([0u8; KEY_LEN]);
    random(dek.as_mut_slice())?;
    let (nonce, ciphertext) = encrypt(
        dek.as_slice(),
        plaintext,
        &value_aad(RECORD_FORMAT, name, version),
    )?;
    let (dek_nonce, wrapped_dek) = wrap(kek, &dek)?;
    Ok(SealedSecret {
        format: RECORD_FORMAT,
        kek_id: kek.id().to_owned(),
        dek_nonce,
        wrapped_dek,
        nonce,
        ciphertext,
    })
}

/// Decrypts `record` as version `version` of secret `name`, with whichever of `keys` has the
/// record's key id. The value is wiped when the returned buffer drops.
pub fn open(
    keys: &[SecretsKey],
    record: &SealedSecret,
    name: &str,
    version: u64,
) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    let dek = unwrap(keys, record)?;
    let nonce = nonce_of("nonce", &record.nonce)?;
    if record.ciphertext.len() < TAG_LEN || record.ciphertext.len() > MAX_VALUE_BYTES + TAG_LEN {
        return Err(SecretsError::AuthenticationFailed);
    }
    let plaintext = decrypt(
        dek.as_slice(),
        &nonce,
        &record.ciphertext,
        &value_aad(record.format, name, version),
    )?;
    Ok(Zeroizing::new(plaintext))
}

/// Re-wraps `record`'s data key under `new_kek` (key rotation); the value's nonce and
/// ciphertext are kept as they are. `old_keys` must hold the key the record names.
pub fn rewrap(
    old_keys: &[SecretsKey],
    new_kek: &SecretsKey,
    record: &SealedSecret,
) -> Result<SealedSecret, SecretsError> {
    let dek = unwrap(old_keys, record)?;
    let (dek_nonce, wrapped_dek) = wrap(new_kek, &dek)?;
    Ok(SealedSecret {
        format: RECORD_FORMAT,
        kek_id: new_kek.id().to_owned(),
        dek_nonce,
        wrapped_dek,
        nonce: record.nonce.clone(),
        ciphertext: record.ciphertext.clone(),
    })
}

/// Encrypts `dek` under `kek`: (nonce, wrapped key with tag).
fn wrap(kek: &SecretsKey, dek: &[u8; KEY_LEN]) -> Result<(Vec<u8>, Vec<u8>), SecretsError> {
    encrypt(kek.material(), dek, &dek_aad(RECORD_FORMAT, kek.id()))
}

/// Checks the record's format and finds its KEK, then decrypts its data key.
fn unwrap(
    keys: &[SecretsKey],
    record: &SealedSecret,
) -> Result<Zeroizing<[u8; KEY_LEN]>, SecretsError> {
    if record.format != RECORD_FORMAT {
        return Err(SecretsError::UnsupportedFormat {
            found: record.format,
        });
    }
    let kek = keys
        .iter()
        .find(|k| k.id() == record.kek_id)
        .ok_or_else(|| SecretsError::UnknownKey {
            id: record.kek_id.clone(),
            loaded: keys
                .iter()
                .map(SecretsKey::id)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let nonce = nonce_of("dek_nonce", &record.dek_nonce)?;
    if record.wrapped_dek.len() != KEY_LEN + TAG_LEN {
        return Err(SecretsError::Malformed {
            field: "wrapped_dek",
            len: record.wrapped_dek.len(),
            expected: KEY_LEN + TAG_LEN,
        });
    }
    let dek = Zeroizing::new(decrypt(
        kek.material(),
        &nonce,
        &record.wrapped_dek,
        &dek_aad(record.format, &record.kek_id),
    )?);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&dek);
    Ok(out)
}

/// AES-256-GCM under `key` with a fresh random nonce: (nonce, ciphertext with tag).
fn encrypt(key: &[u8], msg: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Vec<u8>), SecretsError> {
    let nonce = random_nonce()?;
    let sealed = cipher(key)?
        .encrypt(&nonce, Payload { msg, aad })
        .map_err(|_| SecretsError::EncryptionFailed)?;
    Ok((nonce.to_vec(), sealed))
}

/// Opens `msg` (ciphertext with tag); any mismatch is only "authentication failed".
fn decrypt(
    key: &[u8],
    nonce: &Nonce<Aes256Gcm>,
    msg: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, SecretsError> {
    cipher(key)?
        .decrypt(nonce, Payload { msg, aad })
        .map_err(|_| SecretsError::AuthenticationFailed)
}

fn cipher(key: &[u8]) -> Result<Aes256Gcm, SecretsError> {
    Aes256Gcm::new_from_slice(key).map_err(|_| SecretsError::Malformed {
        field: "key",
        len: key.len(),
        expected: KEY_LEN,
    })
}

fn nonce_of(field: &'static str, bytes: &[u8]) -> Result<Nonce<Aes256Gcm>, SecretsError> {
    Nonce::<Aes256Gcm>::try_from(bytes).map_err(|_| SecretsError::Malformed {
        field,
        len: bytes.len(),
        expected: NONCE_LEN,
    })
}

fn random_nonce() -> Result<Nonce<Aes256Gcm>, SecretsError> {
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce)?;
    Ok(Nonce::<Aes256Gcm>::from(nonce))
}

fn random(buf: &mut [u8]) -> Result<(), SecretsError> {
    getrandom::getrandom(buf).map_err(|e| SecretsError::Random(e.to_string()))
}

/// `"berth-secret-value\0" ‖ u32 format ‖ u32 len(name) ‖ name ‖ u64 version`.
pub(crate) fn value_aad(format: u32, name: &str, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(VALUE_LABEL.len() + 16 + name.len());
    aad.extend_from_slice(VALUE_LABEL);
    aad.extend_from_slice(&format.to_be_bytes());
    push_str(&mut aad, name);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// `"berth-secret-dek\0" ‖ u32 format ‖ u32 len(kek_id) ‖ kek_id`.
pub(crate) fn dek_aad(format: u32, kek_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DEK_LABEL.len() + 8 + kek_id.len());
    aad.extend_from_slice(DEK_LABEL);
    aad.extend_from_slice(&format.to_be_bytes());
    push_str(&mut aad, kek_id);
    aad
}

/// Appends a u32 length and the string; names are far shorter than 4 GiB, and a longer one
/// saturates (its AAD then still differs from any other's by the bytes that follow).
fn push_str(aad: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    aad.extend_from_slice(&len.to_be_bytes());
    aad.extend_from_slice(s.as_bytes());
}
