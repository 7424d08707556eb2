//! Tests of the secrets key file: round trip through the project's atomic writer, and each of the loader's refusals.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use berth_runtime::sys::fs::{WriteOptions, atomic_write_with};

use super::*;

fn fixed_key() -> SecretsKey {
    SecretsKey::from_bytes(Zeroizing::new([7u8; KEY_LEN]))
}

/// Writes `text` at `dir/name` with `mode`, as the CLI would (atomic, create-only).
fn write(dir: &Path, name: &str, text: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    let opts = WriteOptions {
        mode,
        replace: false,
        ..Default::default()
    };
    atomic_write_with(&path, text, opts).unwrap();
    // The umask may have cleared bits the test asks for.
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn generated_key_round_trips_through_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretsKey::generate().unwrap();
    let path = write(dir.path(), "secrets.key", &key.encode(), KEY_FILE_MODE);
    let loaded = SecretsKey::load(&path).unwrap();
    assert_eq!(loaded.id(), key.id());
    assert_eq!(loaded.material(), key.material());
    assert_eq!(key.id().len(), 16);
    // Two generated keys differ (and so do their ids).
    let other = SecretsKey::generate().unwrap();
    assert_ne!(other.material(), key.material());
    assert_ne!(other.id(), key.id());
}

#[test]
fn key_id_is_derived_from_the_key() {
    // The first 8 bytes of SHA-256 of 32 bytes of 0x07, checked with sha256sum.
    assert_eq!(
        fixed_key().id(),
        hex::encode(&Sha256::digest([7u8; 32])[..8])
    );
    assert_eq!(fixed_key().id(), fixed_key().id());
}

#[test]
fn debug_shows_the_id_but_no_key_bytes() {
    let key = fixed_key();
    let shown = format!("{key:?} {key:#?}");
    assert!(shown.contains(key.id()), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
    let b64 = BASE64.encode(key.material());
    assert!(!shown.contains(&b64), "{shown}");
    assert!(!shown.contains("7, 7"), "{shown}");
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.key");
    let err = SecretsKey::load(&path).unwrap_err();
    assert!(matches!(err, SecretsKeyError::Missing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("nope.key") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn group_or_other_access_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, mode) in [("g.key", 0o640), ("o.key", 0o604), ("w.key", 0o620)] {
        let path = write(dir.path(), name, &fixed_key().encode(), mode);
        let err = SecretsKey::load(&path).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, SecretsKeyError::Permissions { mode: m, .. } if m == mode),
            "{msg}"
        );
        assert!(msg.contains(name) && msg.contains("chmod 600"), "{msg}");
    }
}

/// Loads `text` from a 0600 file and returns the error's message, which must name the file.
fn load_error(text: &str) -> (SecretsKeyError, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad.key", text.as_bytes(), KEY_FILE_MODE);
    let err = SecretsKey::load(&path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bad.key"), "{msg}");
    (err, msg)
}

#[test]
fn wrong_length_is_refused() {
    let short = BASE64.encode([1u8; 16]);
    let id = hex::encode(&Sha256::digest([1u8; 16])[..8]);
    let (err, msg) = load_error(&format!(r#"{{"version":1,"id":"{id}","key":"{short}"}}"#));
    assert!(
        matches!(err, SecretsKeyError::Length { found: 16, .. }),
        "{msg}"
    );
    assert!(msg.contains("16 bytes, expected 32"), "{msg}");
}

#[test]
fn bad_encoding_is_refused_without_echoing_the_key() {
    let id = fixed_key().id().to_owned();
    let (err, msg) = load_error(&format!(
        r#"{{"version":1,"id":"{id}","key":"not*base64*secretish"}}"#
    ));
    assert!(matches!(err, SecretsKeyError::Encoding { .. }), "{msg}");
    assert!(!msg.contains("secretish"), "{msg}");
}

#[test]
fn unknown_version_is_refused() {
    let (err, msg) = load_error(r#"{"version":2,"id":"x","key":"y","kms":"z"}"#);
    assert!(
        matches!(err, SecretsKeyError::Version { found: 2, .. }),
        "{msg}"
    );
    assert!(msg.contains("unknown key file version 2"), "{msg}");
}

#[test]
fn not_json_or_missing_fields_are_refused() {
    for text in [
        "",
        "key=abc",
        r#"{"id":"x","key":"y"}"#,
        r#"{"version":1,"id":"x"}"#,
    ] {
        let (err, msg) = load_error(text);
        assert!(
            matches!(err, SecretsKeyError::Format { .. }),
            "{text:?}: {msg}"
        );
    }
}

#[test]
fn id_that_does_not_match_the_key_is_refused() {
    let key = fixed_key();
    let b64 = BASE64.encode(key.material());
    let (err, msg) = load_error(&format!(
        r#"{{"version":1,"id":"0000000000000000","key":"{b64}"}}"#
    ));
    assert!(matches!(err, SecretsKeyError::IdMismatch { .. }), "{msg}");
    assert!(msg.contains(key.id()) && !msg.contains(&b64), "{msg}");
}

#[test]
fn oversized_file_is_refused() {
    // A valid key file padded past 4 KiB with trailing spaces: only the first 4 KiB are read.
    let mut text = String::from_utf8(fixed_key().encode().to_vec()).unwrap();
    text.insert_str(0, &" ".repeat(5000));
    let (err, msg) = load_error(&text);
    assert!(matches!(err, SecretsKeyError::Format { .. }), "{msg}");
}
