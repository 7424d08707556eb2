//! Configs and secrets (issue 15), the domain: versioned values that specs mount, kept in the store (secrets sealed), pinned on Apply and rolled out when updated.
//!
//! Each version is its own key ([`record::version_key`]), written once with `Expect::Absent`
//! and never changed except by key rotation ([`rotate`]). Every version is kept until the
//! config or secret is deleted, so any revision a rollback may restore still finds what it
//! pinned. Secrets are sealed with `crate::secrets` under the key from `--secrets-key`; their
//! plaintext exists only while a version is sealed, compared or put in a node's FileSet
//! ([`delivery`]), always in a `Zeroizing` buffer, and is never logged or returned.

pub(crate) mod delivery;
pub(crate) mod pin;
pub(crate) mod record;
pub(crate) mod rotate;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_proto::v1::{DeploymentSpec, FileInfo};
use sha2::{Digest as _, Sha256};
use tokio::sync::RwLock;
use zeroize::Zeroizing;

use crate::deployments::Deployments;
use crate::error::SchedError;
use crate::records::{self, DEPLOYMENTS, DeploymentRecord};
use crate::secrets::{self, MAX_VALUE_BYTES, SecretsKey};
use crate::spec;
use crate::store::{Expect, Op, Store, StoreError};
use record::{FileVersion, version_key, versions_prefix};

/// What FailedPrecondition says when a secret is needed and no key was given.
pub(crate) const NO_KEY: &str = "the scheduler has no --secrets-key";

/// How often an update retries a deployment whose record changed under it.
const ROLL_ATTEMPTS: usize = 8;

/// Configs or secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Config,
    Secret,
}

impl Kind {
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Kind::Config => "/configs/",
            Kind::Secret => "/secrets/",
        }
    }

    pub(crate) fn noun(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Secret => "secret",
        }
    }
}

/// The key-encryption key and the file it was read from (errors name the file).
#[derive(Debug, Clone)]
pub struct KeyFile {
    pub path: PathBuf,
    pub key: SecretsKey,
}

/// The configs and secrets in a store, and the key secrets are sealed with. Clones share the
/// key, so a rotation switches it for every user.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    store: Arc<dyn Store>,
    /// Writers of sealed records hold it for reading from sealing to writing; a rotation holds
    /// it for writing, so no record is sealed with a key that is about to be replaced.
    key: Arc<RwLock<Option<KeyFile>>>,
}

/// What an update did.
#[derive(Debug)]
pub(crate) struct Updated {
    pub info: FileInfo,
    /// False when the content was the newest version's.
    pub changed: bool,
    /// Deployments that got a new revision.
    pub rolled: Vec<String>,
}

impl Files {
    pub(crate) fn new(store: Arc<dyn Store>, key: Option<KeyFile>) -> Self {
        Self {
            store,
            key: Arc::new(RwLock::new(key)),
        }
    }

    /// Every version of `name`, oldest first, with each record's store revision.
    async fn versions(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Vec<(FileVersion, u64)>, SchedError> {
        let (kvs, _) = self.store.list(&versions_prefix(kind, name)).await?;
        kvs.iter()
            .map(|kv| Ok((records::decode(&kv.key, &kv.value)?, kv.mod_revision)))
            .collect()
    }

    /// Version 1 of a new config or secret; refused when one of that name exists.
    pub(crate) async fn create(
        &self,
        kind: Kind,
        name: &str,
        data: &[u8],
        now: i64,
    ) -> Result<FileInfo, SchedError> {
        spec::validate_name("name", name)?;
        check_size(kind, name, data.len())?;
        if !self.versions(kind, name).await?.is_empty() {
            return Err(exists(kind, name));
        }
        self.write_version(kind, name, 1, data, now).await?;
        tracing::info!(
            kind = kind.noun(),
            name,
            version = 1,
            size = data.len(),
            "created"
        );
        let users = self.used_by(kind, name).await?;
        Ok(info(kind, &self.versions(kind, name).await?, users))
    }

    /// A new version when `data` differs from the newest one's; then every deployment whose
    /// current spec uses it gets a new revision with that version.
    pub(crate) async fn update(
        &self,
        kind: Kind,
        name: &str,
        data: &[u8],
        deployments: &Deployments,
        now: i64,
    ) -> Result<Updated, SchedError> {
        spec::validate_lookup_name("name", name)?;
        check_size(kind, name, data.len())?;
        let versions = self.versions(kind, name).await?;
        let Some((newest, _)) = versions.last() else {
            return Err(not_found(kind, name));
        };
        let same = match kind {
            Kind::Config => newest.data == data,
            Kind::Secret => self.open(newest).await?.as_slice() == data,
        };
        if same {
            let users = self.used_by(kind, name).await?;
            return Ok(Updated {
                info: info(kind, &versions, users),
                changed: false,
                rolled: Vec::new(),
            });
        }
        let version = newest.version + 1;
        self.write_version(kind, name, version, data, now).await?;
        tracing::info!(
            kind = kind.noun(),
            name,
            version,
            size = data.len(),
            "new version"
        );
        let rolled = self.roll(deployments, kind, name, version, now).await?;
        let users = self.used_by(kind, name).await?;
        Ok(Updated {
            info: info(kind, &self.versions(kind, name).await?, users),
            changed: true,
            rolled,
        })
    }

    /// Writes version `version` (sealed, for a secret); a version written meanwhile by
    /// someone else is a conflict.
    async fn write_version(
        &self,
        kind: Kind,
        name: &str,
        version: u64,
        data: &[u8],
        now: i64,
    ) -> Result<(), SchedError> {
        let mut rec = FileVersion {
            name: name.to_string(),
            version,
            created_at_ms: now,
            size_bytes: data.len() as u64,
            ..Default::default()
        };
        // Held until the write is done: see `Files::key`.
        let key = self.key.read().await;
        match kind {
            Kind::Config => {
                rec.sha256 = hex::encode(Sha256::digest(data));
                rec.data = data.to_vec();
            }
            Kind::Secret => {
                let key = key
                    .as_ref()
                    .ok_or_else(|| SchedError::FailedPrecondition(NO_KEY.to_string()))?;
                let sealed = secrets::seal(&key.key, name, version, data).map_err(|e| {
                    SchedError::FailedPrecondition(format!("sealing secret {name:?}: {e}"))
                })?;
                rec.sealed = Some(sealed.into());
            }
        }
        let key_name = version_key(kind, name, version);
        let written = self
            .store
            .put(&key_name, records::encode(&rec), Expect::Absent)
            .await;
        drop(key);
        match written {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) if version == 1 => Err(exists(kind, name)),
            Err(StoreError::Conflict { .. }) => Err(SchedError::Conflict {
                what: format!("writing version {version} of {} {name}", kind.noun()),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The plaintext of a sealed version.
    async fn open(&self, rec: &FileVersion) -> Result<Zeroizing<Vec<u8>>, SchedError> {
        let key = self.key.read().await;
        let key = key
            .as_ref()
            .ok_or_else(|| SchedError::FailedPrecondition(NO_KEY.to_string()))?;
        let sealed = rec.sealed.clone().ok_or_else(|| SchedError::Corrupt {
            key: version_key(Kind::Secret, &rec.name, rec.version),
            reason: "a secret version without its sealed value".into(),
        })?;
        secrets::open(
            std::slice::from_ref(&key.key),
            &sealed.into(),
            &rec.name,
            rec.version,
        )
        .map_err(|e| {
            SchedError::FailedPrecondition(format!(
                "secret {:?} version {}: {e}",
                rec.name, rec.version
            ))
        })
    }

    /// New revisions, with `name` at `version`, of every deployment whose current spec uses it.
    async fn roll(
        &self,
        deployments: &Deployments,
        kind: Kind,
        name: &str,
        version: u64,
        now: i64,
    ) -> Result<Vec<String>, SchedError> {
        let mut rolled = Vec::new();
        for deployment in deployments.names().await? {
            for attempt in 1..=ROLL_ATTEMPTS {
                let (rec, mod_rev) = match deployments.load(&deployment).await {
                    Ok(found) => found,
                    Err(SchedError::NoSuchDeployment(_)) => break,
                    Err(e) => return Err(e),
                };
                let Some(spec) = rec.spec.clone() else { break };
                let bumped = delivery::with_version(&spec, kind, name, version);
                if bumped == spec {
                    break;
                }
                match deployments
                    .new_revision(&deployment, bumped, Some((rec, mod_rev)), false, now)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(deployment = %deployment, kind = kind.noun(), name, version, "rolling to the new version");
                        rolled.push(deployment.clone());
                        break;
                    }
                    Err(SchedError::Conflict { .. }) if attempt < ROLL_ATTEMPTS => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(rolled)
    }

    /// The info on `name`, and (configs only) the content of version `version` (0: newest).
    pub(crate) async fn get(
        &self,
        kind: Kind,
        name: &str,
        version: u64,
    ) -> Result<(FileInfo, Vec<u8>), SchedError> {
        spec::validate_lookup_name("name", name)?;
        let versions = self.versions(kind, name).await?;
        let Some((newest, _)) = versions.last() else {
            return Err(not_found(kind, name));
        };
        let wanted = if version == 0 {
            newest.version
        } else {
            version
        };
        let (found, _) = versions
            .iter()
            .find(|(v, _)| v.version == wanted)
            .ok_or_else(|| SchedError::NotFound {
                what: format!("version {wanted} of {} {name}", kind.noun()),
            })?;
        let data = match kind {
            Kind::Config => found.data.clone(),
            // No call ever returns a secret's value.
            Kind::Secret => Vec::new(),
        };
        let users = self.used_by(kind, name).await?;
        Ok((info(kind, &versions, users), data))
    }

    /// Every config (or secret), by name.
    pub(crate) async fn list(&self, kind: Kind) -> Result<Vec<FileInfo>, SchedError> {
        let (kvs, _) = self.store.list(kind.prefix()).await?;
        let mut by_name: BTreeMap<String, Vec<(FileVersion, u64)>> = BTreeMap::new();
        for kv in kvs {
            let rec: FileVersion = records::decode(&kv.key, &kv.value)?;
            by_name
                .entry(rec.name.clone())
                .or_default()
                .push((rec, kv.mod_revision));
        }
        let specs = self.current_specs().await?;
        Ok(by_name
            .into_iter()
            .map(|(name, versions)| info(kind, &versions, users_in(&specs, kind, &name)))
            .collect())
    }

    /// Deletes every version; refused while a deployment's current spec uses it.
    pub(crate) async fn delete(&self, kind: Kind, name: &str) -> Result<(), SchedError> {
        spec::validate_lookup_name("name", name)?;
        let versions = self.versions(kind, name).await?;
        if versions.is_empty() {
            return Err(not_found(kind, name));
        }
        let users = self.used_by(kind, name).await?;
        if !users.is_empty() {
            return Err(SchedError::FailedPrecondition(format!(
                "{} {name} is used by deployment {}: take it out of their specs first",
                kind.noun(),
                users.join(", ")
            )));
        }
        let ops = versions
            .iter()
            .map(|(v, mod_rev)| Op::Delete {
                key: version_key(kind, name, v.version),
                expect: Expect::Revision(*mod_rev),
            })
            .collect();
        crate::store::txn_chunked(self.store.as_ref(), ops).await?;
        tracing::info!(kind = kind.noun(), name, "deleted");
        Ok(())
    }

    /// The current spec of every deployment.
    async fn current_specs(&self) -> Result<Vec<DeploymentSpec>, SchedError> {
        let (kvs, _) = self.store.list(DEPLOYMENTS).await?;
        let mut specs = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let rec: DeploymentRecord = records::decode(&kv.key, &kv.value)?;
            specs.extend(rec.spec);
        }
        Ok(specs)
    }

    /// Deployments whose current spec uses `name`.
    async fn used_by(&self, kind: Kind, name: &str) -> Result<Vec<String>, SchedError> {
        Ok(users_in(&self.current_specs().await?, kind, name))
    }
}

fn users_in(specs: &[DeploymentSpec], kind: Kind, name: &str) -> Vec<String> {
    specs
        .iter()
        .filter(|s| delivery::spec_refs(s).any(|r| r.kind == kind && r.name == name))
        .map(|s| s.name.clone())
        .collect()
}

/// The API's view: never a value, and for secrets never a digest of one.
fn info(kind: Kind, versions: &[(FileVersion, u64)], used_by: Vec<String>) -> FileInfo {
    let (Some((first, _)), Some((newest, _))) = (versions.first(), versions.last()) else {
        return FileInfo::default();
    };
    FileInfo {
        name: newest.name.clone(),
        version: newest.version,
        versions: versions.iter().map(|(v, _)| v.version).collect(),
        size_bytes: newest.size_bytes,
        created_at_ms: first.created_at_ms,
        updated_at_ms: newest.created_at_ms,
        used_by,
        sha256: match kind {
            Kind::Config => newest.sha256.clone(),
            Kind::Secret => String::new(),
        },
        key_id: newest
            .sealed
            .as_ref()
            .map(|s| s.kek_id.clone())
            .unwrap_or_default(),
    }
}

/// Values over 1 MiB are refused, naming the size.
fn check_size(kind: Kind, name: &str, size: usize) -> Result<(), SchedError> {
    if size > MAX_VALUE_BYTES {
        return Err(SchedError::invalid(
            "data",
            format!(
                "{} {name:?} is {size} bytes, over the limit of {MAX_VALUE_BYTES} bytes (1 MiB)",
                kind.noun()
            ),
        ));
    }
    Ok(())
}

fn not_found(kind: Kind, name: &str) -> SchedError {
    SchedError::NotFound {
        what: format!("{} {name}", kind.noun()),
    }
}

fn exists(kind: Kind, name: &str) -> SchedError {
    SchedError::AlreadyExists {
        what: format!("{} {name}", kind.noun()),
    }
}
