//! Tests of sealing, opening and re-wrapping, of tampering with each field, and of what records and errors reveal.

use zeroize::Zeroizing;

use super::*;

fn key(byte: u8) -> SecretsKey {
    SecretsKey::from_bytes(Zeroizing::new([byte; 32]))
}

/// One key as the key list `open` takes.
fn one(k: &SecretsKey) -> &[SecretsKey] {
    std::slice::from_ref(k)
}

const VALUE: &[u8] = b"hunter2-the-database-password";

#[test]
fn round_trip() {
    let kek = key(1);
    let record = seal(&kek, "db-password", 3, VALUE).unwrap();
    assert_eq!(record.format, RECORD_FORMAT);
    assert_eq!(record.kek_id, kek.id());
    assert_eq!(record.ciphertext.len(), VALUE.len() + 16);
    let opened = open(std::slice::from_ref(&kek), &record, "db-password", 3).unwrap();
    assert_eq!(opened.as_slice(), VALUE);
    // Empty values and the largest allowed one round-trip too.
    let empty = seal(&kek, "e", 1, b"").unwrap();
    assert!(open(one(&kek), &empty, "e", 1).unwrap().is_empty());
    let big = vec![0x5a; MAX_VALUE_BYTES];
    let sealed = seal(&kek, "big", 1, &big).unwrap();
    assert_eq!(open(&[kek], &sealed, "big", 1).unwrap().as_slice(), big);
}

#[test]
fn each_seal_uses_fresh_keys_and_nonces() {
    let kek = key(1);
    let a = seal(&kek, "s", 1, VALUE).unwrap();
    let b = seal(&kek, "s", 1, VALUE).unwrap();
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.dek_nonce, b.dek_nonce);
    assert_ne!(a.wrapped_dek, b.wrapped_dek);
    assert_ne!(a.ciphertext, b.ciphertext);
}

#[test]
fn wrong_name_version_or_key_fails() {
    let kek = key(1);
    let record = seal(&kek, "db-password", 3, VALUE).unwrap();
    for (name, version) in [("db-passwore", 3), ("db-password", 4), ("db-password", 2)] {
        let err = open(one(&kek), &record, name, version).unwrap_err();
        assert!(
            matches!(err, SecretsError::AuthenticationFailed),
            "{name} {version}: {err}"
        );
    }
    // Another key under the record's id still fails to authenticate.
    let other = key(2);
    let mut relabelled = record.clone();
    relabelled.kek_id = other.id().to_owned();
    let err = open(one(&other), &relabelled, "db-password", 3).unwrap_err();
    assert!(matches!(err, SecretsError::AuthenticationFailed), "{err}");
    // Without the record's key, the error names the missing id and the loaded ones.
    let err = open(one(&other), &record, "db-password", 3).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SecretsError::UnknownKey { .. }), "{msg}");
    assert!(msg.contains(kek.id()) && msg.contains(other.id()), "{msg}");
}

/// What a tampered record's open must fail with.
#[derive(Debug, PartialEq)]
enum Expect {
    Format,
    UnknownKey,
    Malformed,
    Authentication,
}

fn kind(err: &SecretsError) -> Option<Expect> {
    Some(match err {
        SecretsError::UnsupportedFormat { .. } => Expect::Format,
        SecretsError::UnknownKey { .. } => Expect::UnknownKey,
        SecretsError::Malformed { .. } => Expect::Malformed,
        SecretsError::AuthenticationFailed => Expect::Authentication,
        _ => return None,
    })
}

/// Every way of changing one field of a record makes it fail to open, with the right error.
#[test]
fn tampering_with_any_field_fails() {
    use Expect::*;
    let kek = key(1);
    let record = seal(&kek, "s", 1, VALUE).unwrap();
    type Tamper = fn(&mut SealedSecret);
    let cases: [(&str, Tamper, Expect); 13] = [
        ("format", |r| r.format = 2, Format),
        (
            "kek_id",
            |r| r.kek_id = "0011223344556677".into(),
            UnknownKey,
        ),
        ("dek_nonce", |r| r.dek_nonce[0] ^= 1, Authentication),
        ("dek_nonce length", |r| r.dek_nonce.push(0), Malformed),
        ("wrapped_dek", |r| r.wrapped_dek[5] ^= 1, Authentication),
        (
            "wrapped_dek tag",
            |r| r.wrapped_dek[47] ^= 1,
            Authentication,
        ),
        (
            "wrapped_dek length",
            |r| r.wrapped_dek.truncate(47),
            Malformed,
        ),
        ("nonce", |r| r.nonce[11] ^= 1, Authentication),
        ("nonce length", |r| r.nonce.truncate(8), Malformed),
        ("ciphertext", |r| r.ciphertext[0] ^= 1, Authentication),
        (
            "ciphertext tag",
            |r| *r.ciphertext.last_mut().unwrap() ^= 1,
            Authentication,
        ),
        (
            "ciphertext truncated",
            |r| r.ciphertext.truncate(10),
            Authentication,
        ),
        (
            "ciphertext extended",
            |r| r.ciphertext.push(0),
            Authentication,
        ),
    ];
    for (what, tamper, expect) in cases {
        let mut tampered = record.clone();
        tamper(&mut tampered);
        assert_ne!(tampered, record, "{what} changed nothing");
        let err = open(one(&kek), &tampered, "s", 1).unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains("hunter2"), "{what}: {msg}");
        if expect == Authentication {
            assert_eq!(msg, "secret record: authentication failed", "{what}");
        }
        assert_eq!(kind(&err), Some(expect), "{what}: {msg}");
    }
}

#[test]
fn rewrap_moves_the_record_to_the_new_key() {
    let old = key(1);
    let new = key(2);
    let record = seal(&old, "s", 7, VALUE).unwrap();
    let rewrapped = rewrap(one(&old), &new, &record).unwrap();
    assert_eq!(rewrapped.kek_id, new.id());
    // Only the data key was re-wrapped.
    assert_eq!(rewrapped.nonce, record.nonce);
    assert_eq!(rewrapped.ciphertext, record.ciphertext);
    assert_ne!(rewrapped.wrapped_dek, record.wrapped_dek);
    let opened = open(one(&new), &rewrapped, "s", 7).unwrap();
    assert_eq!(opened.as_slice(), VALUE);
    // With both keys loaded (mid-rotation) the new record opens too.
    let both = [old.clone(), new.clone()];
    assert_eq!(open(&both, &rewrapped, "s", 7).unwrap().as_slice(), VALUE);
    // The old key alone no longer opens it.
    let err = open(one(&old), &rewrapped, "s", 7).unwrap_err();
    assert!(matches!(err, SecretsError::UnknownKey { ref id, .. } if id == new.id()));
    // Even if someone relabels it with the old key's id.
    let mut relabelled = rewrapped.clone();
    relabelled.kek_id = old.id().to_owned();
    let err = open(one(&old), &relabelled, "s", 7).unwrap_err();
    assert!(matches!(err, SecretsError::AuthenticationFailed), "{err}");
    // Rewrap without the record's key names the missing key.
    let err = rewrap(one(&new), &old, &record).unwrap_err();
    assert!(err.to_string().contains(old.id()), "{err}");
}

#[test]
fn plaintext_is_not_in_the_serialized_record() {
    let kek = key(1);
    let record = seal(&kek, "s", 1, VALUE).unwrap();
    let json = serde_json::to_vec(&record).unwrap();
    let binary = postcard::to_allocvec(&record).unwrap();
    for (what, bytes) in [("json", &json), ("postcard", &binary)] {
        assert!(
            !bytes.windows(VALUE.len()).any(|w| w == VALUE),
            "{what} holds the plaintext"
        );
        // Nor any 8-byte run of it.
        assert!(
            !VALUE.windows(8).any(|p| bytes.windows(8).any(|w| w == p)),
            "{what} holds part of the plaintext"
        );
    }
    // Both encodings read back to the same record, which still opens.
    let from_json: SealedSecret = serde_json::from_slice(&json).unwrap();
    let from_binary: SealedSecret = postcard::from_bytes(&binary).unwrap();
    assert_eq!(from_json, record);
    assert_eq!(from_binary, record);
    assert_eq!(
        open(&[kek], &from_binary, "s", 1).unwrap().as_slice(),
        VALUE
    );
    // The binary encoding keeps raw bytes: ciphertext plus small overhead, no base64.
    assert!(
        binary.len() < record.ciphertext.len() + 100,
        "{}",
        binary.len()
    );
}

#[test]
fn over_one_mib_is_refused() {
    let kek = key(1);
    let value = vec![b'x'; MAX_VALUE_BYTES + 1];
    let err = seal(&kek, "too-big", 1, &value).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, SecretsError::TooLarge { size, .. } if size == MAX_VALUE_BYTES + 1),
        "{msg}"
    );
    assert!(
        msg.contains("too-big") && msg.contains("1048577") && msg.contains("1 MiB"),
        "{msg}"
    );
}

#[test]
fn debug_of_keys_records_and_errors_shows_no_secret_bytes() {
    let kek = key(0xab);
    let record = seal(&kek, "s", 1, VALUE).unwrap();
    let key_bytes_dec = "171, 171";
    let key_bytes_hex = "abababab";
    let errors = [
        open(one(&key(2)), &record, "s", 1).unwrap_err(),
        open(one(&kek), &record, "t", 1).unwrap_err(),
        seal(&kek, "s", 1, &vec![0; MAX_VALUE_BYTES + 1]).unwrap_err(),
    ];
    let mut shown = format!("{kek:?} {record:?} {record:#?}");
    for e in &errors {
        shown.push_str(&format!(" {e:?} {e}"));
    }
    assert!(!shown.contains(key_bytes_dec), "{shown}");
    assert!(!shown.contains(key_bytes_hex), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains(kek.id()), "{shown}");
    // A record's Debug gives lengths, not the ciphertext.
    let ct_start = format!("{:?}", &record.ciphertext[..4]);
    assert!(!shown.contains(ct_start.trim_end_matches(']')), "{shown}");
}
