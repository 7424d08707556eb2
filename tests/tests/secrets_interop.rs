//! berth's sealed-secret format against another implementation: pyca/cryptography's AESGCM
//! (tests/python/secrets_envelope.py, written from the format's documentation) seals a value
//! with known keys and nonces that berth must open, and opens a record berth sealed.

use std::process::Command;

use berth_proto::secrets_key::SecretsKey;
use berth_scheduler::secrets::{SealedSecret, SecretsError, open, seal};
use berth_tests::{pyvenv, run_ok, workspace_root};
use zeroize::Zeroizing;

const KEK: [u8; 32] = [0x42; 32];

fn python(args: &[&str]) -> String {
    let script = workspace_root().join("tests/python/secrets_envelope.py");
    run_ok(Command::new(pyvenv::python()).arg(script).args(args))
        .trim()
        .to_owned()
}

#[test]
fn record_sealed_by_python_opens_in_berth() {
    let kek = SecretsKey::from_bytes(Zeroizing::new(KEK));
    let value = b"postgres://app:s3cr3t@db/app";
    let json = python(&[
        "seal",
        &hex::encode(KEK),
        &hex::encode([0x11u8; 32]),
        &hex::encode([0x22u8; 12]),
        &hex::encode([0x33u8; 12]),
        "db-url",
        "5",
        &hex::encode(value),
    ]);
    let record: SealedSecret = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("python's record {json} does not parse: {e}"));
    // Python derived the same key id from the key.
    assert_eq!(record.kek_id, kek.id());
    let opened = open(std::slice::from_ref(&kek), &record, "db-url", 5).unwrap();
    assert_eq!(opened.as_slice(), value);
    // Under another name or version, python's record does not open either.
    for (name, version) in [("db-url2", 5), ("db-url", 6)] {
        let err = open(std::slice::from_ref(&kek), &record, name, version).unwrap_err();
        assert!(
            matches!(err, SecretsError::AuthenticationFailed),
            "{name} {version}: {err}"
        );
    }
}

#[test]
fn record_sealed_by_berth_opens_in_python() {
    let kek = SecretsKey::from_bytes(Zeroizing::new(KEK));
    let value: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
    let record = seal(&kek, "tls-key", 12, &value).unwrap();
    let json = serde_json::to_string(&record).unwrap();
    let opened = python(&["open", &hex::encode(KEK), "tls-key", "12", &json]);
    assert_eq!(opened, hex::encode(&value));
}
