//! What the scheduler keeps in its store, and under which keys. Records are protobuf
//! (prost) so any backend stores opaque bytes.

use berth_proto::v1::{DeploymentSpec, Resources};
use prost::Message;

/// `/deployments/<name>`
pub(crate) fn deployment_key(name: &str) -> String {
    format!("/deployments/{name}")
}
pub(crate) const DEPLOYMENTS: &str = "/deployments/";

/// `/revisions/<name>/<revision, zero-padded so keys sort by number>`
pub(crate) fn revision_key(name: &str, revision: u64) -> String {
    format!("/revisions/{name}/{revision:020}")
}
pub(crate) fn revisions_prefix(name: &str) -> String {
    format!("/revisions/{name}/")
}

/// `/replicas/<container id>`
pub(crate) fn replica_key(id: &str) -> String {
    format!("/replicas/{id}")
}
pub(crate) const REPLICAS: &str = "/replicas/";

/// `/nodes/<name>`
pub(crate) fn node_key(name: &str) -> String {
    format!("/nodes/{name}")
}
pub(crate) const NODES: &str = "/nodes/";

/// `/pod-cidrs/<cidr>`, e.g. `/pod-cidrs/10.88.3.0/24`: the name of the node that holds the
/// CIDR. Written with `Expect::Absent` in the node's own transaction, so no two nodes get one.
pub(crate) fn pod_cidr_key(cidr: &str) -> String {
    format!("/pod-cidrs/{cidr}")
}
pub(crate) const POD_CIDRS: &str = "/pod-cidrs/";

/// `/vips/<address>`, e.g. `/vips/10.96.0.1`: the name of the deployment that holds the
/// service virtual IP. Written with `Expect::Absent` in the deployment's own transaction, so
/// no two deployments get one; deleted in the transaction that deletes the deployment.
pub(crate) fn vip_key(ip: std::net::Ipv4Addr) -> String {
    format!("/vips/{ip}")
}
pub(crate) const VIPS: &str = "/vips/";

/// `/volumes/<name>`: where a named volume's data lives, written with `Expect::Absent` in the
/// transaction that places the first replica using it.
pub(crate) fn volume_key(name: &str) -> String {
    format!("/volumes/{name}")
}
pub(crate) const VOLUMES: &str = "/volumes/";

/// `/releases/<app>/<release id>`: a `Release`, written once (`Expect::Absent`) when the
/// release first completes a rollout; never changed after.
pub(crate) fn release_key(app: &str, id: &str) -> String {
    format!("/releases/{app}/{id}")
}
pub(crate) const RELEASES: &str = "/releases/";

/// `/release-status/<app>/<environment>`: the `ReleaseStatus` of the last completed rollout of
/// the app in that environment.
pub(crate) fn release_status_key(app: &str, env: &str) -> String {
    format!("/release-status/{app}/{env}")
}

/// `/tokens/<token id>`
pub(crate) fn token_key(id: &str) -> String {
    format!("/tokens/{id}")
}
pub(crate) const TOKENS: &str = "/tokens/";

/// A deployment: its current spec and where its rollout stands.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct DeploymentRecord {
    /// The spec of `revision`.
    #[prost(message, optional, tag = "1")]
    pub spec: Option<DeploymentSpec>,
    #[prost(uint64, tag = "2")]
    pub revision: u64,
    /// The last revision whose rollout completed (0: none yet).
    #[prost(uint64, tag = "3")]
    pub stable_revision: u64,
    /// A `berth.v1.RolloutPhase`.
    #[prost(int32, tag = "4")]
    pub phase: i32,
    #[prost(string, tag = "5")]
    pub message: String,
    /// When the rollout last made progress (or started, or was approved): the deadline
    /// counts from here.
    #[prost(int64, tag = "6")]
    pub progress_at_ms: i64,
    /// The highest revision number ever used (revisions are never reused).
    #[prost(uint64, tag = "7")]
    pub last_revision: u64,
    /// Set on the revision that a failed rollout rolled back from.
    #[prost(uint64, tag = "8")]
    pub rolled_back_from: u64,
    /// When the rollout started waiting for approval.
    #[prost(int64, tag = "9")]
    pub awaiting_since_ms: i64,
    /// The service's virtual IP, allocated with the first revision that has service ports
    /// and kept until the deployment is deleted (empty: none yet).
    #[prost(string, tag = "10")]
    pub virtual_ip: String,
    /// The release id of `stable_revision` (empty: none completed yet).
    #[prost(string, tag = "20")]
    pub stable_release: String,
    /// When `stable_revision`'s rollout completed.
    #[prost(int64, tag = "21")]
    pub stable_since_ms: i64,
}

/// One replica: a container the scheduler has decided to run, and where.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ReplicaRecord {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "2")]
    pub deployment: String,
    #[prost(uint64, tag = "3")]
    pub revision: u64,
    /// Empty while Pending.
    #[prost(string, tag = "4")]
    pub node: String,
    #[prost(int64, tag = "5")]
    pub created_at_ms: i64,
}

/// A node as registered: stable across scheduler restarts (its pod CIDR above all).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct NodeRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(map = "string, string", tag = "2")]
    pub labels: std::collections::HashMap<String, String>,
    #[prost(string, tag = "3")]
    pub pod_cidr: String,
    #[prost(string, tag = "4")]
    pub address: String,
    #[prost(string, tag = "5")]
    pub agent_endpoint: String,
    #[prost(message, optional, tag = "6")]
    pub allocatable: Option<Resources>,
    #[prost(message, optional, tag = "7")]
    pub total: Option<Resources>,
    /// The agent's `--allow-bind` paths, canonical: binds only under these.
    #[prost(string, repeated, tag = "8")]
    pub allowed_bind_paths: Vec<String>,
}

/// A named volume: node-local data, so every replica that uses it runs on `node`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct VolumeRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    /// The node that holds the data.
    #[prost(string, tag = "2")]
    pub node: String,
    #[prost(int64, tag = "3")]
    pub created_at_ms: i64,
}

/// A bearer token: who holds it and what it allows. The secret itself is never stored, only
/// its SHA-256, so a copy of the store grants nothing.
#[derive(Clone, PartialEq, Message)]
pub struct TokenRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    /// A `berth_proto::tls::Role` name: admin, deployer or viewer.
    #[prost(string, tag = "2")]
    pub role: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(int64, tag = "4")]
    pub created_at_ms: i64,
    /// 0: never expires.
    #[prost(int64, tag = "5")]
    pub expires_at_ms: i64,
    /// Lower-case hex SHA-256 of the secret part of the token.
    #[prost(string, tag = "6")]
    pub secret_sha256: String,
}

/// Every value in use among claim keys (`claims`: the part of each key after the prefix) and
/// the records under `records` (`field` of each): an allocator picks outside this set, and
/// records written before their claim keys existed count too.
pub(crate) async fn claimed<R: Message + Default>(
    store: &dyn crate::store::Store,
    claims: &str,
    records: &str,
    field: impl Fn(R) -> String,
) -> Result<std::collections::BTreeSet<String>, crate::error::SchedError> {
    let (keys, _) = store.list(claims).await?;
    let (recs, _) = store.list(records).await?;
    Ok(keys
        .iter()
        .filter_map(|kv| kv.key.strip_prefix(claims).map(str::to_owned))
        .chain(
            recs.iter()
                .filter_map(|kv| decode::<R>(&kv.key, &kv.value).ok())
                .map(field),
        )
        .collect())
}

pub(crate) fn encode<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

pub(crate) fn decode<M: Message + Default>(
    key: &str,
    bytes: &[u8],
) -> Result<M, crate::error::SchedError> {
    M::decode(bytes).map_err(|e| crate::error::SchedError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}
