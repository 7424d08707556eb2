//! The key-encryption key: the start-up check that it opens what the store holds, and rotation (re-wrapping every secret version's data key under a new key).

use std::path::Path;

use super::record::{FileVersion, ROTATION, RotationRecord, SealedRecord};
use super::{Files, KeyFile, Kind, NO_KEY};
use crate::error::SchedError;
use crate::records;
use crate::secrets::{self, SecretsKey};
use crate::store::{Expect, MAX_TXN_OPS, Op};

/// A rotation's transactions stay below this many bytes of values: etcd refuses requests
/// over 1.5 MiB by default, and one sealed version may be 1 MiB by itself.
const MAX_TXN_BYTES: usize = 1 << 20;

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rotated {
    pub old_key_id: String,
    pub new_key_id: String,
    pub rewrapped: u32,
}

impl Files {
    /// Refuses to serve a store whose secrets the loaded key does not open: every sealed
    /// version must name the key's id (the id is derived from the key, so the same id is the
    /// same key). Nothing is rewritten.
    pub(crate) async fn check_key(&self) -> Result<(), SchedError> {
        self.finish_rotation().await?;
        let (kvs, _) = self.store.list(Kind::Secret.prefix()).await?;
        if kvs.is_empty() {
            return Ok(());
        }
        let key = self.key.read().await;
        let Some(key) = key.as_ref() else {
            return Err(SchedError::FailedPrecondition(format!(
                "the store holds {} sealed secret versions but {NO_KEY}: start it with the key file they were sealed with",
                kvs.len()
            )));
        };
        for kv in &kvs {
            let rec: FileVersion = records::decode(&kv.key, &kv.value)?;
            let sealed_with = rec.sealed.as_ref().map_or("", |s| s.kek_id.as_str());
            if sealed_with != key.key.id() {
                return Err(SchedError::FailedPrecondition(format!(
                    "--secrets-key {}: its key {} does not open the stored secrets (secret {:?} version {} is sealed with key {sealed_with:?}); start with the key file they were sealed with (after a rotate-key, the new one)",
                    key.path.display(),
                    key.key.id(),
                    rec.name,
                    rec.version
                )));
            }
        }
        Ok(())
    }

    /// Finishes a rotation that was cut short, when this scheduler holds its old key (the
    /// records already moved are skipped); refuses to start on its new key, which cannot open
    /// the records not moved yet.
    async fn finish_rotation(&self) -> Result<(), SchedError> {
        let Some(kv) = self.store.get(ROTATION).await? else {
            return Ok(());
        };
        let rotation: RotationRecord = records::decode(&kv.key, &kv.value)?;
        let loaded = self
            .key
            .read()
            .await
            .as_ref()
            .map(|k| k.key.id().to_string());
        if loaded.as_deref() != Some(rotation.old_key_id.as_str()) {
            return Err(SchedError::FailedPrecondition(format!(
                "a rotation of the secrets key from {} to {} ({}) was cut short: start once with --secrets-key set to the old key's file to finish it",
                rotation.old_key_id, rotation.new_key_id, rotation.new_key_file
            )));
        }
        tracing::warn!(new_key_file = %rotation.new_key_file, "finishing a secrets key rotation that was cut short");
        self.rotate(Path::new(&rotation.new_key_file)).await?;
        Ok(())
    }

    /// Re-wraps every secret version's data key under the key in `path` (values keep their
    /// ciphertext), then makes it the key in use. Records already under the new key are
    /// skipped, so a rotation cut short can be run again with the same file.
    pub(crate) async fn rotate(&self, path: &Path) -> Result<Rotated, SchedError> {
        if !path.is_absolute() {
            return Err(SchedError::invalid(
                "new_key_file",
                format!(
                    "{} is not an absolute path on the scheduler's host",
                    path.display()
                ),
            ));
        }
        let new = SecretsKey::load(path)
            .map_err(|e| SchedError::invalid("new_key_file", e.to_string()))?;
        // No secret is sealed or written while the records move to the new key.
        let mut slot = self.key.write().await;
        let old = slot
            .as_ref()
            .ok_or_else(|| SchedError::FailedPrecondition(NO_KEY.to_string()))?
            .key
            .clone();
        let (kvs, _) = self.store.list(Kind::Secret.prefix()).await?;
        let mut ops = Vec::new();
        for kv in kvs {
            let mut rec: FileVersion = records::decode(&kv.key, &kv.value)?;
            let Some(sealed) = rec.sealed.take() else {
                continue;
            };
            if sealed.kek_id == new.id() {
                rec.sealed = Some(sealed);
                continue;
            }
            let rewrapped = secrets::rewrap(std::slice::from_ref(&old), &new, &sealed.into())
                .map_err(|e| {
                    SchedError::FailedPrecondition(format!(
                        "re-wrapping secret {:?} version {}: {e}",
                        rec.name, rec.version
                    ))
                })?;
            rec.sealed = Some(SealedRecord::from(rewrapped));
            ops.push(Op::Put {
                key: kv.key,
                value: records::encode(&rec),
                expect: Expect::Revision(kv.mod_revision),
            });
        }
        let rewrapped = u32::try_from(ops.len()).unwrap_or(u32::MAX);
        let rotation = RotationRecord {
            old_key_id: old.id().to_string(),
            new_key_id: new.id().to_string(),
            new_key_file: path.display().to_string(),
        };
        self.store
            .put(ROTATION, records::encode(&rotation), Expect::Any)
            .await?;
        for chunk in chunks(ops) {
            self.store.txn(chunk).await?;
        }
        self.store.delete(ROTATION, Expect::Any).await?;
        let rotated = Rotated {
            old_key_id: old.id().to_string(),
            new_key_id: new.id().to_string(),
            rewrapped,
        };
        *slot = Some(KeyFile {
            path: path.to_owned(),
            key: new,
        });
        tracing::info!(
            old_key = %rotated.old_key_id,
            new_key = %rotated.new_key_id,
            rewrapped,
            new_key_file = %path.display(),
            "secrets key rotated: restart this scheduler (and any standby) with --secrets-key set to the new file"
        );
        Ok(rotated)
    }
}

/// Writes in transactions of at most [`MAX_TXN_OPS`] and about [`MAX_TXN_BYTES`] (a single
/// larger write goes alone). `store::txn_chunked` counts writes only, which would put up to
/// 100 one-MiB records in one etcd request.
fn chunks(ops: Vec<Op>) -> Vec<Vec<Op>> {
    let mut out: Vec<Vec<Op>> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let size = match &op {
            Op::Put { value, .. } => value.len(),
            Op::Delete { .. } => 0,
        };
        let full = out
            .last()
            .is_none_or(|c| c.len() >= MAX_TXN_OPS || bytes + size > MAX_TXN_BYTES);
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        out.last_mut().expect("a chunk was pushed").push(op);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(size: usize) -> Op {
        Op::Put {
            key: format!("/k/{size}"),
            value: vec![0; size],
            expect: Expect::Any,
        }
    }

    #[test]
    fn chunks_hold_at_most_100_writes_and_about_a_mebibyte() {
        let small: Vec<Op> = (0..250).map(|_| put(10)).collect();
        let sizes: Vec<usize> = chunks(small).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let big = vec![put(MAX_TXN_BYTES), put(600_000), put(600_000), put(1)];
        let sizes: Vec<usize> = chunks(big).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 1, 2]);
        assert!(chunks(Vec::new()).is_empty());
    }
}
