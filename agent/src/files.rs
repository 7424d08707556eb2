//! The configs and secrets this node's assignments use, as the scheduler's latest FileSet
//! gave them: in memory only (secrets in `Zeroizing` buffers, wiped when a newer set drops
//! them), never logged. Containers waiting for a version watch [`Files::changed`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use berth_proto::v1::{Assignment, FileContent, FileSet};
use tokio::sync::watch;
use zeroize::Zeroizing;

/// A secret's value: zeroed when the last holder drops it.
pub(crate) type SecretValue = Arc<Zeroizing<Vec<u8>>>;

type Key = (String, u64);

#[derive(Debug, Default)]
struct Held {
    generation: u64,
    configs: BTreeMap<Key, Arc<Vec<u8>>>,
    secrets: BTreeMap<Key, SecretValue>,
}

/// The node's file store.
pub(crate) struct Files {
    held: Mutex<Held>,
    /// Bumped on every set taken, so that waiting containers look again.
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.held.lock().unwrap();
        f.debug_struct("Files")
            .field("generation", &held.generation)
            .field("configs", &held.configs.keys().collect::<Vec<_>>())
            .field("secrets", &held.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The versions an assignment needs, with their content.
#[derive(Default)]
pub(crate) struct Resolved {
    /// Per `Assignment.configs`, in order.
    pub(crate) configs: Vec<Arc<Vec<u8>>>,
    /// Per `Assignment.secrets`, in order.
    pub(crate) secrets: Vec<SecretValue>,
    /// Per `Assignment.env_from_secret`, in order.
    pub(crate) env: Vec<SecretValue>,
}

impl Default for Files {
    fn default() -> Self {
        Self {
            held: Mutex::new(Held::default()),
            changes: watch::channel(0).0,
        }
    }
}

impl Files {
    /// Takes `set` as the node's whole set (what it drops is forgotten, secrets wiped);
    /// an older generation than the one held is ignored (returns false).
    pub(crate) fn replace(&self, set: FileSet) -> bool {
        let mut held = self.held.lock().unwrap();
        if set.generation != 0 && set.generation < held.generation {
            return false;
        }
        let configs = set.configs.into_iter().map(|c| {
            let (key, data) = split(c);
            (key, Arc::new(data))
        });
        // The buffer moves into the Zeroizing wrapper, uncopied.
        let secrets = set.secrets.into_iter().map(|c| {
            let (key, data) = split(c);
            (key, Arc::new(Zeroizing::new(data)))
        });
        *held = Held {
            generation: set.generation,
            configs: configs.collect(),
            secrets: secrets.collect(),
        };
        drop(held);
        self.changes.send_modify(|n| *n += 1);
        true
    }

    /// A new session numbers its sets afresh.
    pub(crate) fn reset_generation(&self) {
        self.held.lock().unwrap().generation = 0;
    }

    /// Changes whenever a set is taken.
    pub(crate) fn changed(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Everything `a` needs, or the first thing missing, as the status says it: "waiting for
    /// secret NAME version N from the scheduler".
    pub(crate) fn resolve(&self, a: &Assignment) -> Result<Resolved, String> {
        let held = self.held.lock().unwrap();
        let config = |name: &str, version: u64| {
            held.configs
                .get(&(name.to_string(), version))
                .cloned()
                .ok_or_else(|| waiting("config", name, version))
        };
        let secret = |name: &str, version: u64| {
            held.secrets
                .get(&(name.to_string(), version))
                .cloned()
                .ok_or_else(|| waiting("secret", name, version))
        };
        Ok(Resolved {
            configs: a
                .configs
                .iter()
                .map(|c| config(&c.name, c.version))
                .collect::<Result<_, _>>()?,
            secrets: a
                .secrets
                .iter()
                .map(|s| secret(&s.name, s.version))
                .collect::<Result<_, _>>()?,
            env: a
                .env_from_secret
                .iter()
                .map(|e| secret(&e.secret, e.version))
                .collect::<Result<_, _>>()?,
        })
    }
}

fn split(c: FileContent) -> (Key, Vec<u8>) {
    ((c.name, c.version), c.data)
}

fn waiting(kind: &str, name: &str, version: u64) -> String {
    format!("waiting for {kind} {name} version {version} from the scheduler")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::{ConfigMount, SecretEnv, SecretMount};

    fn content(name: &str, version: u64, data: &[u8]) -> FileContent {
        FileContent {
            name: name.into(),
            version,
            data: data.to_vec(),
        }
    }

    fn uses(config: (&str, u64), secret: (&str, u64)) -> Assignment {
        Assignment {
            configs: vec![ConfigMount {
                name: config.0.into(),
                version: config.1,
                ..Default::default()
            }],
            secrets: vec![SecretMount {
                name: secret.0.into(),
                version: secret.1,
                ..Default::default()
            }],
            env_from_secret: vec![SecretEnv {
                env: "PW".into(),
                secret: secret.0.into(),
                version: secret.1,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_version_is_named_and_a_newer_set_replaces_the_old() {
        let files = Files::default();
        let a = uses(("app", 2), ("db", 1));
        assert_eq!(
            files.resolve(&a).err().unwrap(),
            "waiting for config app version 2 from the scheduler"
        );
        let mut changed = files.changed();
        assert!(files.replace(FileSet {
            generation: 1,
            configs: vec![content("app", 2, b"conf")],
            secrets: vec![],
        }));
        assert!(changed.has_changed().unwrap());
        changed.mark_unchanged();
        assert_eq!(
            files.resolve(&a).err().unwrap(),
            "waiting for secret db version 1 from the scheduler"
        );
        assert!(files.replace(FileSet {
            generation: 2,
            configs: vec![content("app", 2, b"conf")],
            secrets: vec![content("db", 1, b"pw")],
        }));
        let r = files.resolve(&a).unwrap();
        assert_eq!(r.configs[0].as_slice(), b"conf");
        assert_eq!(r.secrets[0].as_slice(), b"pw");
        assert_eq!(r.env[0].as_slice(), b"pw");
        // An older set is ignored; a newer one that drops the secret forgets it.
        assert!(!files.replace(FileSet {
            generation: 1,
            ..Default::default()
        }));
        assert!(files.resolve(&a).is_ok());
        assert!(files.replace(FileSet {
            generation: 3,
            configs: vec![content("app", 2, b"conf")],
            secrets: vec![],
        }));
        assert!(files.resolve(&a).is_err());
        // A new session starts numbering again.
        files.reset_generation();
        assert!(files.replace(FileSet {
            generation: 1,
            ..Default::default()
        }));
    }

    #[test]
    fn debug_names_versions_but_never_values() {
        let files = Files::default();
        files.replace(FileSet {
            generation: 1,
            configs: vec![],
            secrets: vec![content("db", 1, b"hunter2-secret")],
        });
        let text = format!("{files:?}");
        assert!(text.contains("db") && !text.contains("hunter2"), "{text}");
    }
}
