//! Releases, the domain: when a rollout completes, the release it ran is recorded once
//! (`/releases/<app>/<id>`, create-only, so a release is immutable) with where it serves
//! (`/release-status/<app>/<env>`); ListReleases joins those with the live deployments to show
//! what runs where. The gRPC handlers stay thin over this module.

use std::collections::BTreeMap;

use berth_proto::v1::{
    AppStatus, Deployment, DeploymentSpec, ListReleasesResponse, Release, ReleaseStatus,
    RolloutPhase, image_source::Fetch,
};

use crate::environments::key::normalize;
use crate::error::SchedError;
use crate::records::{self, RELEASES, release_key, release_status_key};
use crate::release_id::{release_id, release_spec};
use crate::store::{Expect, Store, StoreError};

/// The digest a spec's image is pinned to: the part after '@' of a registry image pinned on
/// Apply; empty for node-local images (present or import), which have no registry digest.
pub(crate) fn image_digest(spec: &DeploymentSpec) -> String {
    let pulled = matches!(
        spec.image_source.as_ref().and_then(|s| s.fetch.as_ref()),
        Some(Fetch::Pull(_))
    );
    match spec.image.split_once('@') {
        Some((_, digest)) if pulled => digest.to_string(),
        _ => String::new(),
    }
}

/// Records that `spec` (the stored spec of `revision`) completed a rollout at `now`: its
/// release (kept as first written when it already exists) and the serving status of its app in
/// its environment. Returns the release id.
pub(crate) async fn record_completed(
    store: &dyn Store,
    spec: &DeploymentSpec,
    revision: u64,
    now: i64,
) -> Result<String, SchedError> {
    let id = release_id(spec);
    let plain = release_spec(spec);
    let env = normalize(&spec.environment).to_string();
    let release = Release {
        id: id.clone(),
        app: plain.name.clone(),
        image: spec.image.clone(),
        image_digest: image_digest(spec),
        spec: Some(plain.clone()),
        created_at_ms: now,
        first_environment: env.clone(),
    };
    match store
        .put(
            &release_key(&plain.name, &id),
            records::encode(&release),
            Expect::Absent,
        )
        .await
    {
        // Completed before (elsewhere, or here earlier): the first record stands.
        Ok(_) | Err(StoreError::Conflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let status = ReleaseStatus {
        environment: env.clone(),
        release: id.clone(),
        revision,
        phase: RolloutPhase::Complete as i32,
        completed_at_ms: now,
        replicas: spec.replicas,
        ..Default::default()
    };
    store
        .put(
            &release_status_key(&plain.name, &env),
            records::encode(&status),
            Expect::Any,
        )
        .await?;
    tracing::info!(app = %plain.name, environment = %env, release = %id, revision, "release serving");
    Ok(id)
}

/// The releases of `app` (every app when empty), newest first, and per app one status per
/// environment it is deployed in, from the live `deployments` (described by the controller).
pub(crate) async fn list(
    store: &dyn Store,
    app: &str,
    deployments: &[Deployment],
) -> Result<ListReleasesResponse, SchedError> {
    let prefix = if app.is_empty() {
        RELEASES.to_string()
    } else {
        format!("{RELEASES}{app}/")
    };
    let (kvs, _) = store.list(&prefix).await?;
    let mut releases = kvs
        .iter()
        .map(|kv| records::decode::<Release>(&kv.key, &kv.value))
        .collect::<Result<Vec<_>, _>>()?;
    releases.sort_by(|a, b| {
        (b.created_at_ms, &b.id)
            .cmp(&(a.created_at_ms, &a.id))
            .then(a.app.cmp(&b.app))
    });
    let mut apps: BTreeMap<String, BTreeMap<String, ReleaseStatus>> = BTreeMap::new();
    for d in deployments {
        let Some(spec) = d.spec.as_ref() else {
            continue;
        };
        let name = release_spec(spec).name;
        if !app.is_empty() && name != app {
            continue;
        }
        let env = normalize(&spec.environment).to_string();
        let status = serving(store, d, spec, &name, &env).await?;
        apps.entry(name).or_default().insert(env, status);
    }
    let apps = apps
        .into_iter()
        .map(|(app, envs)| AppStatus {
            app,
            environments: envs.into_values().collect(),
        })
        .collect();
    Ok(ListReleasesResponse { releases, apps })
}

/// The status of one deployment: its stable release (with when it completed, from the status
/// record) and the release a rollout in progress moves to.
async fn serving(
    store: &dyn Store,
    d: &Deployment,
    spec: &DeploymentSpec,
    app: &str,
    env: &str,
) -> Result<ReleaseStatus, SchedError> {
    let key = release_status_key(app, env);
    let recorded = match store.get(&key).await? {
        Some(kv) => Some(records::decode::<ReleaseStatus>(&key, &kv.value)?),
        None => None,
    };
    let completed_at_ms = recorded
        .filter(|r| r.release == d.release)
        .map_or(0, |r| r.completed_at_ms);
    let pending = d.revision != d.stable_revision
        || d.phase == RolloutPhase::AwaitingApproval as i32
        || d.phase == RolloutPhase::Progressing as i32;
    Ok(ReleaseStatus {
        environment: env.to_string(),
        release: d.release.clone(),
        revision: d.stable_revision,
        phase: d.phase,
        completed_at_ms,
        replicas: spec.replicas,
        ready_replicas: d.ready_replicas,
        pending_release: if pending {
            release_id(spec)
        } else {
            String::new()
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_proto::v1::{ImageSource, RegistryPull};

    use super::*;
    use crate::store::redb::RedbStore;

    fn spec(image: &str, env: &str) -> DeploymentSpec {
        let name = if env.is_empty() {
            "web".to_string()
        } else {
            format!("web.{env}")
        };
        DeploymentSpec {
            name,
            image: image.into(),
            image_source: Some(ImageSource {
                reference: image.into(),
                fetch: Some(Fetch::Pull(RegistryPull::default())),
            }),
            replicas: 2,
            environment: env.into(),
            ..Default::default()
        }
    }

    fn deployment(spec: &DeploymentSpec, release: &str) -> Deployment {
        Deployment {
            spec: Some(spec.clone()),
            revision: 1,
            stable_revision: 1,
            phase: RolloutPhase::Complete as i32,
            ready_replicas: 2,
            release: release.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_release_is_written_once_and_listed_per_environment() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let image = "127.0.0.1:5000/web@sha256:ab";
        let staging = spec(image, "staging");
        let id = record_completed(store.as_ref(), &staging, 1, 1_000)
            .await
            .unwrap();
        // The same release completing elsewhere later keeps its first record.
        let default = spec(image, "");
        let again = record_completed(store.as_ref(), &default, 1, 2_000)
            .await
            .unwrap();
        assert_eq!(id, again, "one release in every environment");
        let live = [deployment(&staging, &id), deployment(&default, &id)];
        let listed = list(store.as_ref(), "web", &live).await.unwrap();
        let [release] = &listed.releases[..] else {
            panic!("one release: {listed:?}");
        };
        assert_eq!(release.created_at_ms, 1_000);
        assert_eq!(release.first_environment, "staging");
        assert_eq!(release.image_digest, "sha256:ab");
        assert_eq!(release.spec.as_ref().unwrap().name, "web");
        assert_eq!(release.spec.as_ref().unwrap().environment, "");
        let envs: Vec<_> = listed.apps[0]
            .environments
            .iter()
            .map(|s| (s.environment.as_str(), s.completed_at_ms, s.ready_replicas))
            .collect();
        assert_eq!(envs, [("default", 2_000, 2), ("staging", 1_000, 2)]);
        assert!(
            list(store.as_ref(), "other", &live)
                .await
                .unwrap()
                .apps
                .is_empty()
        );
    }

    #[test]
    fn node_local_images_have_no_digest() {
        let mut s = spec("web@sha256:ab", "");
        s.image_source = None;
        assert_eq!(image_digest(&s), "");
    }
}
