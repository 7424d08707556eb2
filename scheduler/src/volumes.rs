//! Named volumes as the cluster sees them: the node that holds each one's data (its
//! `/volumes/<name>` record, written by the control loop with the first placement) and the
//! deployments that use it; and the nodes' bind allow-lists, for Apply.

use std::collections::BTreeMap;

use berth_proto::v1::ClusterVolume;

use crate::cluster::Cluster;
use crate::error::SchedError;
use crate::records::{self, DEPLOYMENTS, DeploymentRecord, VOLUMES, VolumeRecord};
use crate::spec::mounts::volume_names;
use crate::store::Store;

/// Every volume with a record, and every volume a deployment's current spec names (with an
/// empty node until a replica has run with it), sorted by name.
pub(crate) async fn list(store: &dyn Store) -> Result<Vec<ClusterVolume>, SchedError> {
    let mut out: BTreeMap<String, ClusterVolume> = BTreeMap::new();
    let (kvs, _) = store.list(VOLUMES).await?;
    for kv in &kvs {
        let v: VolumeRecord = records::decode(&kv.key, &kv.value)?;
        out.insert(
            v.name.clone(),
            ClusterVolume {
                name: v.name,
                node: v.node,
                used_by: Vec::new(),
                created_at_ms: v.created_at_ms,
            },
        );
    }
    let (kvs, _) = store.list(DEPLOYMENTS).await?;
    for kv in &kvs {
        let rec: DeploymentRecord = records::decode(&kv.key, &kv.value)?;
        let Some(spec) = rec.spec else { continue };
        for name in volume_names(&spec) {
            let entry = out
                .entry(name.to_string())
                .or_insert_with(|| ClusterVolume {
                    name: name.to_string(),
                    ..Default::default()
                });
            entry.used_by.push(spec.name.clone());
        }
    }
    Ok(out.into_values().collect())
}

/// Each registered node's `--allow-bind` paths, by node name.
pub(crate) fn allow_lists(cluster: &Cluster) -> Vec<(String, Vec<String>)> {
    cluster.with_nodes(|nodes| {
        nodes
            .values()
            .map(|n| (n.record.name.clone(), n.record.allowed_bind_paths.clone()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use berth_proto::v1::{DeploymentSpec, VolumeMount};

    use super::*;
    use crate::records::{deployment_key, volume_key};
    use crate::store::Expect;
    use crate::store::redb::RedbStore;

    fn uses(name: &str, volumes: &[&str]) -> DeploymentRecord {
        DeploymentRecord {
            spec: Some(DeploymentSpec {
                name: name.into(),
                volumes: volumes
                    .iter()
                    .map(|v| VolumeMount {
                        name: (*v).into(),
                        path: format!("/{v}"),
                        read_only: false,
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn lists_records_and_the_deployments_using_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        let record = VolumeRecord {
            name: "data".into(),
            node: "n1".into(),
            created_at_ms: 7,
        };
        let puts = [
            (volume_key("data"), records::encode(&record)),
            (
                deployment_key("db"),
                records::encode(&uses("db", &["data", "logs"])),
            ),
            (
                deployment_key("backup"),
                records::encode(&uses("backup", &["data"])),
            ),
        ];
        for (key, value) in puts {
            store.put(&key, value, Expect::Absent).await.unwrap();
        }
        let listed = list(&store).await.unwrap();
        assert_eq!(
            listed,
            vec![
                ClusterVolume {
                    name: "data".into(),
                    node: "n1".into(),
                    used_by: vec!["backup".into(), "db".into()],
                    created_at_ms: 7,
                },
                ClusterVolume {
                    name: "logs".into(),
                    node: String::new(),
                    used_by: vec!["db".into()],
                    created_at_ms: 0,
                },
            ]
        );
    }
}
