//! What a node gets: the config and secret versions its assignments use, as a FileSet whose secret values are wiped when it drops.

use std::collections::BTreeSet;
use std::fmt;

use berth_proto::v1::{
    Assignment, DeploymentSpec, FileContent, FileSet, SchedulerMessage, scheduler_message,
};
use zeroize::Zeroize as _;

use super::record::{FileVersion, version_key};
use super::{Files, Kind};
use crate::records;

/// One version of a config or secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FileRef {
    pub kind: Kind,
    pub name: String,
    pub version: u64,
}

/// The versions named by mounts and env vars (specs and assignments have the same fields).
fn refs<'a>(
    configs: &'a [berth_proto::v1::ConfigMount],
    secrets: &'a [berth_proto::v1::SecretMount],
    env: &'a [berth_proto::v1::SecretEnv],
) -> impl Iterator<Item = FileRef> + 'a {
    let r = |kind, name: &str, version| FileRef {
        kind,
        name: name.to_string(),
        version,
    };
    configs
        .iter()
        .map(move |c| r(Kind::Config, &c.name, c.version))
        .chain(
            secrets
                .iter()
                .map(move |s| r(Kind::Secret, &s.name, s.version)),
        )
        .chain(
            env.iter()
                .map(move |e| r(Kind::Secret, &e.secret, e.version)),
        )
}

/// What a spec uses.
pub(crate) fn spec_refs(spec: &DeploymentSpec) -> impl Iterator<Item = FileRef> + '_ {
    refs(&spec.configs, &spec.secrets, &spec.env_from_secret)
}

/// What a node's assignments use.
pub(crate) fn assignment_refs(assignments: &[Assignment]) -> BTreeSet<FileRef> {
    assignments
        .iter()
        .flat_map(|a| refs(&a.configs, &a.secrets, &a.env_from_secret))
        .collect()
}

/// `spec` with every use of `name` at `version`.
pub(crate) fn with_version(
    spec: &DeploymentSpec,
    kind: Kind,
    name: &str,
    version: u64,
) -> DeploymentSpec {
    let mut spec = spec.clone();
    match kind {
        Kind::Config => {
            for c in spec.configs.iter_mut().filter(|c| c.name == name) {
                c.version = version;
            }
        }
        Kind::Secret => {
            for s in spec.secrets.iter_mut().filter(|s| s.name == name) {
                s.version = version;
            }
            for e in spec.env_from_secret.iter_mut().filter(|e| e.secret == name) {
                e.version = version;
            }
        }
    }
    spec
}

/// A node's file set with its content. The scheduler keeps the last one per node, to open
/// every new session with it; its secret values are wiped when it is replaced or dropped.
/// (The copy a session's stream encodes is tonic's, and is not wiped.)
pub(crate) struct Delivery {
    pub refs: BTreeSet<FileRef>,
    set: FileSet,
}

/// Names and versions only, never content.
impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("refs", &self.refs)
            .finish_non_exhaustive()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        for s in &mut self.set.secrets {
            s.data.zeroize();
        }
    }
}

impl Delivery {
    /// The versions `refs` with their content `set` (which owns the secret values now).
    pub(crate) fn new(refs: BTreeSet<FileRef>, set: FileSet) -> Self {
        Self { refs, set }
    }

    /// The set as sent under `generation`.
    pub(crate) fn message(&mut self, generation: u64) -> SchedulerMessage {
        self.set.generation = generation;
        SchedulerMessage {
            msg: Some(scheduler_message::Msg::Files(self.set.clone())),
        }
    }
}

impl Files {
    /// The content of every version in `refs`. One that cannot be read (deleted meanwhile, or
    /// a secret that does not open) is left out with a warning, and its assignment waits on
    /// the node with a reason that names it.
    pub(crate) async fn delivery(&self, refs: BTreeSet<FileRef>) -> Delivery {
        let mut set = FileSet::default();
        for r in &refs {
            match self.content(r).await {
                Ok(content) => match r.kind {
                    Kind::Config => set.configs.push(content),
                    Kind::Secret => set.secrets.push(content),
                },
                Err(e) => tracing::warn!(
                    kind = r.kind.noun(),
                    name = %r.name,
                    version = r.version,
                    "cannot deliver: {e}"
                ),
            }
        }
        let size = prost::Message::encoded_len(&set);
        if size > berth_proto::MAX_MESSAGE_BYTES {
            // The session stream refuses messages this large: say so, with names only.
            tracing::warn!(
                size,
                limit = berth_proto::MAX_MESSAGE_BYTES,
                files = ?refs,
                "a node's file set is over the message limit"
            );
        }
        Delivery::new(refs, set)
    }

    async fn content(&self, r: &FileRef) -> Result<FileContent, crate::error::SchedError> {
        let key = version_key(r.kind, &r.name, r.version);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| crate::error::SchedError::NotFound {
                what: format!("version {} of {} {}", r.version, r.kind.noun(), r.name),
            })?;
        let rec: FileVersion = records::decode(&key, &kv.value)?;
        let data = match r.kind {
            Kind::Config => rec.data,
            // Moved out of the wiped buffer into the set, which wipes it in turn.
            Kind::Secret => std::mem::take(&mut *self.open(&rec).await?),
        };
        Ok(FileContent {
            name: r.name.clone(),
            version: r.version,
            data,
        })
    }
}
