//! Environments against a real redb store in a temporary directory.

use berth_proto::v1::DeploymentSpec;

use super::*;
use crate::deployments::Deployments;
use crate::store::redb::RedbStore;

fn open(dir: &tempfile::TempDir) -> (Environments, Deployments) {
    let (envs, deployments, _) = open_store(dir);
    (envs, deployments)
}

fn open_store(dir: &tempfile::TempDir) -> (Environments, Deployments, Arc<dyn Store>) {
    let store: Arc<dyn Store> =
        Arc::new(RedbStore::open(&dir.path().join("state.redb")).expect("open the store"));
    (
        Environments::new(store.clone()),
        Deployments::new(store.clone(), "10.96.0.0/16".parse().unwrap()),
        store,
    )
}

fn staging() -> Environment {
    Environment {
        name: "staging".into(),
        approval: Approval::Manual as i32,
        node_selector: [("tier".to_string(), "staging".to_string())].into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_list_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (envs, _) = open(&dir);
    let created = envs.create(staging(), 7).await.unwrap();
    assert_eq!(created.created_at_ms, 7);
    let again = envs.create(staging(), 8).await.unwrap_err();
    assert!(matches!(again, SchedError::AlreadyExists { .. }), "{again}");
    let default = envs.create(default_environment(), 8).await.unwrap_err();
    assert!(
        matches!(default, SchedError::AlreadyExists { .. }),
        "{default}"
    );
    let bad = Environment {
        name: "Bad_Name".into(),
        ..Default::default()
    };
    let e = envs.create(bad, 8).await.unwrap_err().to_string();
    assert!(e.contains("environment.name"), "{e}");
    let names: Vec<String> = envs
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["default", "staging"]);
    assert!(envs.requires_approval("staging").await.unwrap());
    assert!(!envs.requires_approval("").await.unwrap());
    let missing = envs.get("stagin").await.unwrap_err();
    assert_eq!(missing.to_string(), "environment \"stagin\" does not exist");
    assert_eq!(
        envs.selectors().await.unwrap()["staging"]["tier"],
        "staging"
    );
}

#[tokio::test]
async fn delete_refuses_default_and_environments_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (envs, deployments) = open(&dir);
    envs.create(staging(), 1).await.unwrap();
    let spec = DeploymentSpec {
        name: key::qualified("staging", "hello"),
        environment: "staging".into(),
        image: "hello:1".into(),
        replicas: 1,
        ..Default::default()
    };
    deployments.apply(spec, &[], 1).await.unwrap();
    let listed = envs.list().await.unwrap();
    assert_eq!(listed[1].deployments, 1);
    let e = envs.delete("staging").await.unwrap_err().to_string();
    assert!(e.contains("hello"), "{e}");
    let e = envs.delete("default").await.unwrap_err().to_string();
    assert!(e.contains("cannot be deleted"), "{e}");
    deployments.delete("hello.staging").await.unwrap();
    envs.delete("staging").await.unwrap();
    assert!(matches!(
        envs.get("staging").await,
        Err(SchedError::NoSuchEnvironment(_))
    ));
}

/// A manual environment holds an auto spec's rollout at AwaitingApproval, without writing its
/// policy into the stored spec; the default environment rolls the same spec out at once.
#[tokio::test]
async fn a_manual_environment_holds_an_auto_spec_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    let (envs, deployments) = open(&dir);
    envs.create(staging(), 1).await.unwrap();
    let spec = |env: &str| DeploymentSpec {
        name: key::qualified(env, "hello"),
        environment: key::stored(env),
        image: "hello:1".into(),
        replicas: 1,
        ..Default::default()
    };
    deployments.apply(spec("staging"), &[], 1).await.unwrap();
    deployments.apply(spec("default"), &[], 1).await.unwrap();
    let (held, _) = deployments.load("hello.staging").await.unwrap();
    assert_eq!(
        held.phase,
        berth_proto::v1::RolloutPhase::AwaitingApproval as i32
    );
    let stored = held.spec.unwrap().rollout.unwrap();
    assert_eq!(stored.approval, Approval::Auto as i32);
    let (free, _) = deployments.load("hello").await.unwrap();
    assert_eq!(
        free.phase,
        berth_proto::v1::RolloutPhase::Progressing as i32
    );
}

/// A deployment created in an environment and the environment's deletion cannot both land:
/// the creation's transaction carries the guard, which fails once the environment went, and
/// a deployment that lands first makes the delete refuse.
#[tokio::test]
async fn creating_a_deployment_and_deleting_its_environment_do_not_both_land() {
    let dir = tempfile::tempdir().unwrap();
    let (envs, deployments, store) = open_store(&dir);
    envs.create(staging(), 1).await.unwrap();
    assert!(envs.guard("default").await.unwrap().is_none());
    let guard = envs.guard("staging").await.unwrap().expect("a guard");
    envs.delete("staging").await.unwrap();
    let late = store.txn(vec![guard]).await.unwrap_err();
    assert!(matches!(late, StoreError::Conflict { .. }), "{late}");
    let spec = DeploymentSpec {
        name: key::qualified("staging", "hello"),
        environment: "staging".into(),
        image: "hello:1".into(),
        replicas: 1,
        ..Default::default()
    };
    let refused = deployments.apply(spec, &[], 2).await.unwrap_err();
    assert!(
        matches!(refused, SchedError::NoSuchEnvironment(_)),
        "{refused}"
    );
}
