//! The configs and secrets domain against a real redb store in a temporary directory: versions, limits, pinning on Apply, update-driven revisions and rollback, deletion rules, sealing at rest, delivery and key rotation.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::Arc;

use berth_proto::v1::{ConfigMount, DeploymentSpec, SecretEnv, SecretMount};

use super::delivery::FileRef;
use super::*;
use crate::store::redb::RedbStore;

const NOW: i64 = 1_000;

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    files: Files,
    deployments: Deployments,
}

fn key_file(dir: &std::path::Path, name: &str) -> KeyFile {
    let key = SecretsKey::generate().unwrap();
    let path = dir.join(name);
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .unwrap()
        .write_all(&key.encode())
        .unwrap();
    KeyFile { path, key }
}

/// A store, and the domain with a secrets key (or none).
fn fixture(with_key: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
    let key = with_key.then(|| key_file(dir.path(), "kek.json"));
    let files = Files::new(store.clone(), key);
    let deployments =
        Deployments::new(store.clone(), "10.96.0.0/16".parse().unwrap()).with_files(files.clone());
    Fixture {
        dir,
        store,
        files,
        deployments,
    }
}

fn web(configs: &[&str], secrets: &[&str]) -> DeploymentSpec {
    DeploymentSpec {
        name: "web".into(),
        image: "web:1".into(),
        replicas: 2,
        configs: configs
            .iter()
            .map(|c| ConfigMount {
                name: (*c).into(),
                path: format!("/etc/{c}"),
                ..Default::default()
            })
            .collect(),
        secrets: secrets
            .iter()
            .map(|s| SecretMount {
                name: (*s).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The FileSet a node using `refs` gets, as sent under generation 5.
async fn file_set(f: &Fixture, refs: BTreeSet<FileRef>) -> berth_proto::v1::FileSet {
    let mut d = f.files.delivery(refs).await;
    let berth_proto::v1::SchedulerMessage {
        msg: Some(berth_proto::v1::scheduler_message::Msg::Files(set)),
    } = d.message(5)
    else {
        panic!("a file set")
    };
    assert_eq!(set.generation, 5);
    set
}

async fn current(f: &Fixture) -> DeploymentSpec {
    f.deployments.load("web").await.unwrap().0.spec.unwrap()
}

#[tokio::test]
async fn versions_grow_create_twice_is_refused_and_same_content_changes_nothing() {
    let f = fixture(false);
    let info = f
        .files
        .create(Kind::Config, "app-conf", b"a=1", NOW)
        .await
        .unwrap();
    assert_eq!((info.version, info.versions.clone()), (1, vec![1]));
    assert_eq!(info.sha256, hex::encode(Sha256::digest(b"a=1")));
    let err = f
        .files
        .create(Kind::Config, "app-conf", b"a=2", NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, SchedError::AlreadyExists { .. }), "{err}");
    assert_eq!(err.to_string(), "config app-conf exists already");

    let same = f
        .files
        .update(Kind::Config, "app-conf", b"a=1", &f.deployments, NOW)
        .await
        .unwrap();
    assert!(!same.changed);
    assert_eq!(same.info.versions, vec![1]);
    let new = f
        .files
        .update(Kind::Config, "app-conf", b"a=2", &f.deployments, NOW + 1)
        .await
        .unwrap();
    assert!(new.changed);
    assert_eq!((new.info.version, new.info.versions), (2, vec![1, 2]));
    assert_eq!(new.info.updated_at_ms, NOW + 1);
    // Each version keeps its own content.
    let (_, old) = f.files.get(Kind::Config, "app-conf", 1).await.unwrap();
    assert_eq!(old, b"a=1");
    let (_, newest) = f.files.get(Kind::Config, "app-conf", 0).await.unwrap();
    assert_eq!(newest, b"a=2");
    let err = f.files.get(Kind::Config, "app-conf", 9).await.unwrap_err();
    assert!(
        err.to_string().contains("version 9 of config app-conf"),
        "{err}"
    );
    let listed = f.files.list(Kind::Config).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "app-conf");
    let err = f
        .files
        .update(Kind::Config, "nope", b"x", &f.deployments, NOW)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "config nope not found");
}

#[tokio::test]
async fn values_over_one_mebibyte_are_refused_naming_the_size() {
    let f = fixture(true);
    let big = vec![b'x'; MAX_VALUE_BYTES + 1];
    for kind in [Kind::Config, Kind::Secret] {
        let err = f.files.create(kind, "big", &big, NOW).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SchedError::InvalidArgument { .. }), "{text}");
        assert!(
            text.contains("1048577 bytes") && text.contains("1 MiB"),
            "{text}"
        );
    }
    // Exactly the limit is fine.
    let limit = vec![b'x'; MAX_VALUE_BYTES];
    f.files
        .create(Kind::Secret, "big", &limit, NOW)
        .await
        .unwrap();
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_need_the_key() {
    let marker = b"plaintext-marker-7f3a9c";
    let f = fixture(true);
    let info = f
        .files
        .create(Kind::Secret, "db-password", marker, NOW)
        .await
        .unwrap();
    let kek = f.files.key.read().await.clone().unwrap();
    assert_eq!(info.key_id, kek.key.id());
    assert!(info.sha256.is_empty(), "no digest of a secret is given out");
    let (kvs, _) = f.store.list("/secrets/").await.unwrap();
    assert_eq!(kvs.len(), 1);
    assert_eq!(kvs[0].key, "/secrets/db-password/00000000000000000001");
    assert!(!kvs[0].value.windows(marker.len()).any(|w| w == marker));
    // Get gives the info only.
    let (got, data) = f.files.get(Kind::Secret, "db-password", 0).await.unwrap();
    assert!(data.is_empty());
    assert_eq!(got.size_bytes, marker.len() as u64);
    let same = f
        .files
        .update(Kind::Secret, "db-password", marker, &f.deployments, NOW)
        .await
        .unwrap();
    assert!(!same.changed, "the same value is no new version");

    let keyless = fixture(false);
    let err = keyless
        .files
        .create(Kind::Secret, "s", b"v", NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, SchedError::FailedPrecondition(_)));
    assert!(err.to_string().contains(NO_KEY), "{err}");
    let err = keyless
        .deployments
        .apply(web(&[], &["s"]), &[], NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, SchedError::FailedPrecondition(_)), "{err}");
    assert!(err.to_string().contains("spec.secrets[0]") && err.to_string().contains(NO_KEY));
}

#[tokio::test]
async fn apply_pins_versions_fills_defaults_and_names_bad_fields() {
    let f = fixture(true);
    f.files
        .create(Kind::Config, "app-conf", b"a=1", NOW)
        .await
        .unwrap();
    f.files
        .create(Kind::Secret, "db-password", b"pw", NOW)
        .await
        .unwrap();
    let err = f
        .deployments
        .apply(web(&["nope"], &[]), &[], NOW)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid spec.configs[0].name: no config \"nope\""
    );
    let err = f
        .deployments
        .apply(web(&[], &["nope"]), &[], NOW)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid spec.secrets[0].name: no secret \"nope\""
    );
    let mut bad_version = web(&["app-conf"], &[]);
    bad_version.configs[0].version = 7;
    let err = f
        .deployments
        .apply(bad_version, &[], NOW)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("spec.configs[0].version")
            && err.to_string().contains("has no version 7"),
        "{err}"
    );
    for outside in [
        "/etc/passwd",
        "/run/secrets",
        "/run/secrets/../x",
        "run/secrets/a",
        "/run/secretsx/a",
    ] {
        let mut spec = web(&[], &["db-password"]);
        spec.secrets[0].path = outside.into();
        let err = f.deployments.apply(spec, &[], NOW).await.unwrap_err();
        assert!(
            err.to_string().contains("spec.secrets[0].path"),
            "{outside}: {err}"
        );
    }
    let mut env = web(&[], &[]);
    env.env_from_secret.push(SecretEnv {
        env: "DB_PASSWORD".into(),
        secret: "missing".into(),
        version: 0,
    });
    let err = f.deployments.apply(env, &[], NOW).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid spec.env_from_secret[0].secret: no secret \"missing\""
    );

    f.deployments
        .apply(web(&["app-conf"], &["db-password"]), &[], NOW)
        .await
        .unwrap();
    let spec = current(&f).await;
    assert_eq!((spec.configs[0].version, spec.configs[0].mode), (1, 0o444));
    assert_eq!(spec.secrets[0].version, 1);
    assert_eq!(spec.secrets[0].path, "/run/secrets/db-password");
    // The same file applied again is no change: the filled spec is what is compared.
    let (_, changed) = f
        .deployments
        .apply(web(&["app-conf"], &["db-password"]), &[], NOW)
        .await
        .unwrap();
    assert!(!changed);
}

#[tokio::test]
async fn an_update_makes_a_revision_with_the_new_version_and_rollback_restores_the_old() {
    let f = fixture(true);
    f.files
        .create(Kind::Config, "app-conf", b"a=1", NOW)
        .await
        .unwrap();
    f.files
        .create(Kind::Secret, "db-password", b"pw1", NOW)
        .await
        .unwrap();
    let mut spec = web(&["app-conf"], &["db-password"]);
    spec.env_from_secret.push(SecretEnv {
        env: "DB_PASSWORD".into(),
        secret: "db-password".into(),
        version: 0,
    });
    f.deployments.apply(spec.clone(), &[], NOW).await.unwrap();
    let other = DeploymentSpec {
        name: "other".into(),
        image: "other:1".into(),
        ..Default::default()
    };
    f.deployments.apply(other, &[], NOW).await.unwrap();
    assert_eq!(f.deployments.load("web").await.unwrap().0.revision, 1);

    let updated = f
        .files
        .update(Kind::Config, "app-conf", b"a=2", &f.deployments, NOW)
        .await
        .unwrap();
    assert_eq!(
        updated.rolled,
        vec!["web".to_string()],
        "only the user rolls"
    );
    let (rec, _) = f.deployments.load("web").await.unwrap();
    assert_eq!(rec.revision, 2);
    assert_eq!(rec.spec.as_ref().unwrap().configs[0].version, 2);
    assert_eq!(f.deployments.load("other").await.unwrap().0.revision, 1);
    // The same file applied again pins the newest version, which the update already rolled
    // out: no change.
    let (_, changed) = f.deployments.apply(spec.clone(), &[], NOW).await.unwrap();
    assert!(!changed);

    let rolled = f
        .files
        .update(Kind::Secret, "db-password", b"pw2", &f.deployments, NOW)
        .await
        .unwrap();
    assert_eq!(rolled.rolled, vec!["web".to_string()]);
    let now = current(&f).await;
    assert_eq!(
        (now.secrets[0].version, now.env_from_secret[0].version),
        (2, 2)
    );

    // Rollback to revision 1 restores version 1 of both.
    f.deployments.rollback("web", 1, NOW).await.unwrap();
    let back = current(&f).await;
    assert_eq!(back.configs[0].version, 1);
    assert_eq!(
        (back.secrets[0].version, back.env_from_secret[0].version),
        (1, 1)
    );
    // Now the same file again pins the newest versions, unlike the rolled-back revision: a
    // change.
    let (_, changed) = f.deployments.apply(spec.clone(), &[], NOW).await.unwrap();
    assert!(changed);
    assert_eq!(current(&f).await.configs[0].version, 2);
    // The old versions are still there to deliver.
    let refs: BTreeSet<FileRef> = delivery::spec_refs(&back).collect();
    let set = file_set(&f, refs).await;
    assert_eq!(set.configs.len(), 1);
    assert_eq!(set.configs[0].data, b"a=1");
    assert_eq!(set.secrets.len(), 1, "mount and env share one version");
    assert_eq!(set.secrets[0].data, b"pw1");
}

#[tokio::test]
async fn delete_is_refused_while_a_deployment_uses_it() {
    let f = fixture(true);
    f.files
        .create(Kind::Config, "app-conf", b"a=1", NOW)
        .await
        .unwrap();
    f.files
        .update(Kind::Config, "app-conf", b"a=2", &f.deployments, NOW)
        .await
        .unwrap();
    f.deployments
        .apply(web(&["app-conf"], &[]), &[], NOW)
        .await
        .unwrap();
    let err = f.files.delete(Kind::Config, "app-conf").await.unwrap_err();
    assert!(matches!(err, SchedError::FailedPrecondition(_)));
    assert!(err.to_string().contains("used by deployment web"), "{err}");
    let listed = f.files.list(Kind::Config).await.unwrap();
    assert_eq!(listed[0].used_by, vec!["web".to_string()]);
    // Once no current spec uses it, it may go; a rollback to a revision that pinned it is
    // then refused, naming it, instead of leaving replicas waiting for it.
    f.deployments.apply(web(&[], &[]), &[], NOW).await.unwrap();
    f.files.delete(Kind::Config, "app-conf").await.unwrap();
    let err = f.deployments.rollback("web", 1, NOW).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid spec.configs[0].name: no config \"app-conf\""
    );
    f.deployments.delete("web").await.unwrap();
    let (left, _) = f.store.list("/configs/").await.unwrap();
    assert!(left.is_empty(), "every version goes");
    let err = f.files.delete(Kind::Config, "app-conf").await.unwrap_err();
    assert!(matches!(err, SchedError::NotFound { .. }));
}

#[tokio::test]
async fn rotation_rewraps_every_version_and_the_old_key_no_longer_opens_them() {
    let f = fixture(true);
    let old = f.files.key.read().await.clone().unwrap();
    f.files
        .create(Kind::Secret, "a", b"value-a", NOW)
        .await
        .unwrap();
    f.files
        .update(Kind::Secret, "a", b"value-a2", &f.deployments, NOW)
        .await
        .unwrap();
    f.files
        .create(Kind::Secret, "b", b"value-b", NOW)
        .await
        .unwrap();
    f.files.check_key().await.unwrap();

    let new = key_file(f.dir.path(), "new.json");
    let err = f
        .files
        .rotate(std::path::Path::new("new.json"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("new_key_file"), "{err}");
    let rotated = f.files.rotate(&new.path).await.unwrap();
    assert_eq!(rotated.old_key_id, old.key.id());
    assert_eq!(rotated.new_key_id, new.key.id());
    assert_eq!(rotated.rewrapped, 3);
    // Again with the same file: nothing left to re-wrap.
    assert_eq!(f.files.rotate(&new.path).await.unwrap().rewrapped, 0);

    let (kvs, _) = f.store.list("/secrets/").await.unwrap();
    for kv in &kvs {
        let rec: FileVersion = records::decode(&kv.key, &kv.value).unwrap();
        let sealed = rec.sealed.clone().unwrap();
        assert_eq!(sealed.kek_id, new.key.id());
        let opened = secrets::open(
            std::slice::from_ref(&old.key),
            &sealed.into(),
            &rec.name,
            rec.version,
        );
        assert!(opened.is_err(), "the old key opens nothing");
    }
    let refs: BTreeSet<FileRef> = [("a", 1), ("a", 2), ("b", 1)]
        .iter()
        .map(|(n, v)| FileRef {
            kind: Kind::Secret,
            name: (*n).into(),
            version: *v,
        })
        .collect();
    let set = file_set(&f, refs).await;
    let values: Vec<&[u8]> = set.secrets.iter().map(|s| s.data.as_slice()).collect();
    assert_eq!(values, vec![&b"value-a"[..], b"value-a2", b"value-b"]);
    assert_eq!(
        f.files.get(Kind::Secret, "a", 0).await.unwrap().0.key_id,
        new.key.id()
    );

    // A scheduler that starts with the old key refuses the store, naming the file.
    let stale = Files::new(f.store.clone(), Some(old.clone()));
    let err = stale.check_key().await.unwrap_err();
    assert!(
        err.to_string().contains(&old.path.display().to_string()),
        "{err}"
    );
    let keyless = Files::new(f.store.clone(), None);
    assert!(
        keyless
            .check_key()
            .await
            .unwrap_err()
            .to_string()
            .contains(NO_KEY)
    );
}

#[tokio::test]
async fn a_rotation_cut_short_is_finished_by_a_start_with_the_old_key() {
    let f = fixture(true);
    let old = f.files.key.read().await.clone().unwrap();
    f.files
        .create(Kind::Secret, "a", b"value-a", NOW)
        .await
        .unwrap();
    f.files
        .create(Kind::Secret, "b", b"value-b", NOW)
        .await
        .unwrap();
    let new = key_file(f.dir.path(), "new.json");
    // As a rotation that wrote its marker and moved "a" before the process died.
    let (kvs, _) = f.store.list("/secrets/a/").await.unwrap();
    let mut rec: FileVersion = records::decode(&kvs[0].key, &kvs[0].value).unwrap();
    let sealed = rec.sealed.take().unwrap().into();
    let moved = secrets::rewrap(std::slice::from_ref(&old.key), &new.key, &sealed).unwrap();
    rec.sealed = Some(moved.into());
    f.store
        .put(&kvs[0].key, records::encode(&rec), Expect::Any)
        .await
        .unwrap();
    let marker = record::RotationRecord {
        old_key_id: old.key.id().into(),
        new_key_id: new.key.id().into(),
        new_key_file: new.path.display().to_string(),
    };
    f.store
        .put(record::ROTATION, records::encode(&marker), Expect::Any)
        .await
        .unwrap();

    let on_new = Files::new(f.store.clone(), Some(new.clone()));
    let err = on_new.check_key().await.unwrap_err();
    assert!(err.to_string().contains("cut short"), "{err}");
    let on_old = Files::new(f.store.clone(), Some(old));
    on_old.check_key().await.unwrap();
    assert!(f.store.get(record::ROTATION).await.unwrap().is_none());
    on_new.check_key().await.unwrap();
    let (info, _) = on_new.get(Kind::Secret, "b", 0).await.unwrap();
    assert_eq!(info.key_id, new.key.id());
}
