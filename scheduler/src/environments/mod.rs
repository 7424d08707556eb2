//! Environments: named sets of deployments (staging, production, ...) with their own approval
//! policy and node selector, kept under `/environments/<name>`. `default` always exists (it
//! has no record) and cannot be deleted. Neither the policy nor the selector is copied into a
//! deployment's spec: the rollout reads the policy when it starts, placement the selector.

pub(crate) mod key;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_proto::v1::{Approval, Environment};

use crate::error::SchedError;
use crate::records::{self, DEPLOYMENTS};
use crate::store::{Expect, KeyValue, Op, Store, StoreError};

/// `/environments/<name>`
fn environment_key(name: &str) -> String {
    format!("/environments/{name}")
}
const ENVIRONMENTS: &str = "/environments/";

/// The environments in a store.
#[derive(Debug, Clone)]
pub(crate) struct Environments {
    store: Arc<dyn Store>,
}

/// The default environment: automatic rollouts, any node.
fn default_environment() -> Environment {
    Environment {
        name: key::DEFAULT.into(),
        ..Default::default()
    }
}

impl Environments {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Environment `name` ("" is the default), or NotFound naming it.
    pub(crate) async fn get(&self, name: &str) -> Result<Environment, SchedError> {
        let name = key::normalize(name);
        if name == key::DEFAULT {
            return Ok(default_environment());
        }
        let kv = self.record(name).await?;
        records::decode(&kv.key, &kv.value)
    }

    /// Records a new environment (AlreadyExists when the name is taken, `default` included).
    pub(crate) async fn create(
        &self,
        mut env: Environment,
        now: i64,
    ) -> Result<Environment, SchedError> {
        crate::spec::validate_name("environment.name", &env.name)?;
        if env.name == key::DEFAULT {
            return Err(exists(&env.name));
        }
        if Approval::try_from(env.approval).is_err() {
            return Err(SchedError::invalid(
                "environment.approval",
                format!("{} is not an approval policy", env.approval),
            ));
        }
        if let Some(k) = env
            .node_selector
            .keys()
            .find(|k| k.is_empty() || k.contains('='))
        {
            return Err(SchedError::invalid(
                "environment.node_selector",
                format!("{k:?} is not a label key"),
            ));
        }
        env.created_at_ms = now;
        env.deployments = 0;
        let k = environment_key(&env.name);
        match self
            .store
            .put(&k, records::encode(&env), Expect::Absent)
            .await
        {
            Ok(_) => {
                tracing::info!(environment = %env.name, "environment created");
                Ok(env)
            }
            Err(StoreError::Conflict { .. }) => Err(exists(&env.name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Every environment, `default` first, each with its number of deployments.
    pub(crate) async fn list(&self) -> Result<Vec<Environment>, SchedError> {
        let mut counts: HashMap<String, u32> = HashMap::new();
        for name in self.deployment_names().await? {
            *counts.entry(key::split(&name).0.to_string()).or_default() += 1;
        }
        let (kvs, _) = self.store.list(ENVIRONMENTS).await?;
        let mut out = vec![default_environment()];
        for kv in kvs {
            out.push(records::decode(&kv.key, &kv.value)?);
        }
        for env in &mut out {
            env.deployments = counts.get(&env.name).copied().unwrap_or(0);
        }
        Ok(out)
    }

    /// The record of environment `name` (not the default one), or NotFound naming it.
    async fn record(&self, name: &str) -> Result<KeyValue, SchedError> {
        crate::spec::validate_name("environment", name)?;
        self.store
            .get(&environment_key(name))
            .await?
            .ok_or_else(|| SchedError::NoSuchEnvironment(name.to_string()))
    }

    /// A write that leaves environment `env`'s record as it is but fails if the record changed
    /// or went meanwhile (None for the default environment): part of the transaction that
    /// creates a deployment in it, so that the creation and a concurrent delete of the
    /// environment (which expects the record's revision it read) cannot both succeed.
    pub(crate) async fn guard(&self, env: &str) -> Result<Option<Op>, SchedError> {
        let name = key::normalize(env);
        if name == key::DEFAULT {
            return Ok(None);
        }
        let kv = self.record(name).await?;
        Ok(Some(Op::Put {
            key: kv.key,
            value: kv.value,
            expect: Expect::Revision(kv.mod_revision),
        }))
    }

    /// Deletes environment `name`; refused for `default` and while deployments live in it.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), SchedError> {
        if key::normalize(name) == key::DEFAULT {
            return Err(SchedError::FailedPrecondition(
                "environment default always exists and cannot be deleted".into(),
            ));
        }
        // Read before the deployments: a deployment created after this read rewrote it.
        let kv = self.record(name).await?;
        let held: Vec<String> = self
            .deployment_names()
            .await?
            .iter()
            .filter_map(|q| match key::split(q) {
                (env, app) if env == name => Some(app.to_string()),
                _ => None,
            })
            .collect();
        if !held.is_empty() {
            return Err(SchedError::FailedPrecondition(format!(
                "environment {name} still holds deployments: {} (delete them first)",
                held.join(", ")
            )));
        }
        match self
            .store
            .delete(&kv.key, Expect::Revision(kv.mod_revision))
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(SchedError::Conflict {
                    what: format!("deleting environment {name}"),
                });
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(environment = %name, "environment deleted");
        Ok(())
    }

    /// Whether rollouts in `env` wait for approval whatever their spec says.
    pub(crate) async fn requires_approval(&self, env: &str) -> Result<bool, SchedError> {
        Ok(self.get(env).await?.approval == Approval::Manual as i32)
    }

    /// Every recorded environment's node selector (the default environment has none).
    pub(crate) async fn selectors(
        &self,
    ) -> Result<HashMap<String, BTreeMap<String, String>>, SchedError> {
        let (kvs, _) = self.store.list(ENVIRONMENTS).await?;
        let mut out = HashMap::new();
        for kv in kvs {
            let env: Environment = records::decode(&kv.key, &kv.value)?;
            out.insert(env.name, env.node_selector);
        }
        Ok(out)
    }

    async fn deployment_names(&self) -> Result<Vec<String>, SchedError> {
        let (kvs, _) = self.store.list(DEPLOYMENTS).await?;
        Ok(kvs
            .into_iter()
            .map(|kv| kv.key.trim_start_matches(DEPLOYMENTS).to_string())
            .collect())
    }
}

fn exists(name: &str) -> SchedError {
    SchedError::AlreadyExists {
        what: format!("environment {name}"),
    }
}

#[cfg(test)]
mod tests;
