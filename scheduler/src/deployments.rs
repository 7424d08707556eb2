//! Deployments, the domain: a spec applied as a new revision (history pruned in the same
//! transaction), approval, rejection, rollback, scale and delete, over the store with revision
//! checks. The gRPC handlers and the control loop both call it; it knows neither.

use crate::release_id::release_id;
use std::collections::HashMap;
use std::sync::Arc;

use ipnet::Ipv4Net;

use berth_proto::v1::{
    Approval, ContainerState, ContainerStatus, Deployment, DeploymentSpec, ReplicaStatus,
    Resources, RevisionRecord, RolloutEvent, RolloutPhase,
};

use crate::environments::{Environments, key};
use crate::error::SchedError;
use crate::files::Files;
use crate::records::{
    self, DEPLOYMENTS, DeploymentRecord, ReplicaRecord, deployment_key, revision_key,
    revisions_prefix,
};
use crate::spec;
use crate::store::{Expect, Op, Store, StoreError};
use crate::vips;

/// The deployments and revisions in a store.
#[derive(Debug, Clone)]
pub(crate) struct Deployments {
    store: Arc<dyn Store>,
    /// Virtual IPs of services come from here.
    service_network: Ipv4Net,
    /// Configs and secrets: Apply pins the versions a spec uses.
    files: Files,
    /// A new revision waits for approval when its environment says so.
    environments: Environments,
    /// Counts approvals, rejections and rollbacks.
    metrics: crate::metrics::Metrics,
}

/// How often a write that lost a virtual IP to a concurrent one picks again.
const VIP_ATTEMPTS: usize = 64;

impl Deployments {
    pub(crate) fn new(store: Arc<dyn Store>, service_network: Ipv4Net) -> Self {
        Self {
            files: Files::new(store.clone(), None),
            environments: Environments::new(store.clone()),
            store,
            service_network,
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// The same deployments, counting into `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same deployments, with configs and secrets from `files` (which holds the secrets key).
    pub(crate) fn with_files(mut self, files: Files) -> Self {
        self.files = files;
        self
    }

    /// The deployment's record and its store revision (for a checked write back).
    pub(crate) async fn load(&self, name: &str) -> Result<(DeploymentRecord, u64), SchedError> {
        spec::validate_lookup_name("name", name)?;
        let key = deployment_key(name);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| SchedError::NoSuchDeployment(name.to_string()))?;
        Ok((records::decode(&key, &kv.value)?, kv.mod_revision))
    }

    /// The names of every deployment, in key order.
    pub(crate) async fn names(&self) -> Result<Vec<String>, SchedError> {
        let (kvs, _) = self.store.list(DEPLOYMENTS).await?;
        Ok(kvs
            .into_iter()
            .map(|kv| kv.key.trim_start_matches(DEPLOYMENTS).to_string())
            .collect())
    }

    /// Writes a deployment record if it is still at `mod_rev` (else Conflict: someone else
    /// wrote it first).
    pub(crate) async fn save(
        &self,
        name: &str,
        rec: &DeploymentRecord,
        mod_rev: u64,
    ) -> Result<(), SchedError> {
        self.store
            .put(
                &deployment_key(name),
                records::encode(rec),
                Expect::Revision(mod_rev),
            )
            .await
            .map_err(|e| conflict_as(e, format!("updating deployment {name}")))?;
        Ok(())
    }

    /// Records how revision `revision`'s rollout ended (nothing when the revision was pruned).
    pub(crate) async fn set_outcome(
        &self,
        name: &str,
        revision: u64,
        outcome: RolloutPhase,
        message: &str,
    ) -> Result<(), SchedError> {
        let key = revision_key(name, revision);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(());
        };
        let mut r: RevisionRecord = records::decode(&key, &kv.value)?;
        r.outcome = outcome as i32;
        r.message = message.to_string();
        self.store
            .put(&key, records::encode(&r), Expect::Revision(kv.mod_revision))
            .await?;
        Ok(())
    }

    /// The spec of revision `revision`: None when the revision has no record (pruned) or its
    /// record carries no spec, so nothing is ever rolled out from an empty default spec.
    pub(crate) async fn spec_of(
        &self,
        name: &str,
        revision: u64,
    ) -> Result<Option<DeploymentSpec>, SchedError> {
        let key = revision_key(name, revision);
        match self.store.get(&key).await? {
            Some(kv) => Ok(records::decode::<RevisionRecord>(&key, &kv.value)?.spec),
            None => Ok(None),
        }
    }

    /// Writes revision `revision` of `name` with `spec`.
    pub(crate) async fn put_revision(
        &self,
        name: &str,
        revision: u64,
        spec: &DeploymentSpec,
        now: i64,
    ) -> Result<(), SchedError> {
        let record = RevisionRecord {
            revision,
            spec: Some(spec.clone()),
            created_at_ms: now,
            outcome: RolloutPhase::Progressing as i32,
            message: String::new(),
            release: release_id(spec),
        };
        self.store
            .put(
                &revision_key(name, revision),
                records::encode(&record),
                Expect::Any,
            )
            .await?;
        Ok(())
    }

    /// Ends a rollout waiting for approval in `rec` (the caller saves it): the stable revision
    /// stays (or nothing runs).
    pub(crate) async fn reject(
        &self,
        name: &str,
        rec: &mut DeploymentRecord,
        why: &str,
    ) -> Result<(), SchedError> {
        let rejected = rec.revision;
        self.set_outcome(name, rejected, RolloutPhase::Rejected, why)
            .await?;
        self.metrics.rejected(name);
        if rec.stable_revision != 0
            && let Some(mut spec) = self.spec_of(name, rec.stable_revision).await?
        {
            spec.replicas = rec.spec.as_ref().map_or(spec.replicas, |s| s.replicas);
            rec.spec = Some(spec);
            rec.revision = rec.stable_revision;
            rec.phase = RolloutPhase::Complete as i32;
        } else {
            rec.phase = RolloutPhase::Rejected as i32;
        }
        rec.message = format!("revision {rejected} rejected: {why}");
        rec.awaiting_since_ms = 0;
        Ok(())
    }

    /// Applies `spec` (defaults filled in, checked, and fitting one of the nodes'
    /// `allocatable`): a new revision when it differs from the current one. Returns the
    /// deployment's name and whether anything changed.
    pub(crate) async fn apply(
        &self,
        spec: DeploymentSpec,
        allocatable: &[(String, Resources)],
        now: i64,
    ) -> Result<(String, bool), SchedError> {
        let spec = spec::with_defaults(spec);
        spec::validate(&spec)?;
        let spec = crate::pin_image::pin(spec).await?;
        let spec = self.files.pin(spec).await?;
        check_fits_somewhere(&spec, allocatable)?;
        let name = spec.name.clone();
        let existing = match self.load(&name).await {
            Ok(found) => Some(found),
            Err(SchedError::NoSuchDeployment(_)) => None,
            Err(e) => return Err(e),
        };
        let changed = existing
            .as_ref()
            .is_none_or(|(rec, _)| rec.spec.as_ref() != Some(&spec));
        if changed {
            self.new_revision(&name, spec, existing, false, now).await?;
        }
        Ok((name, changed))
    }

    /// Starts rolling out `spec` as a new revision (waiting for approval when asked, unless
    /// `bypass_approval`).
    pub(crate) async fn new_revision(
        &self,
        name: &str,
        spec: DeploymentSpec,
        existing: Option<(DeploymentRecord, u64)>,
        bypass_approval: bool,
        now: i64,
    ) -> Result<(), SchedError> {
        let (mut rec, expect) = match existing {
            Some((rec, mod_rev)) => (rec, Expect::Revision(mod_rev)),
            None => (DeploymentRecord::default(), Expect::Absent),
        };
        let revision = rec.last_revision + 1;
        // The spec or its environment may ask for approval; the environment's policy is read
        // now, when the rollout starts, and never copied into the spec.
        let manual = spec
            .rollout
            .as_ref()
            .is_some_and(|r| r.approval == Approval::Manual as i32)
            || (!bypass_approval
                && self
                    .environments
                    .requires_approval(&spec.environment)
                    .await?);
        rec.last_revision = revision;
        rec.revision = revision;
        rec.rolled_back_from = 0;
        rec.progress_at_ms = now;
        rec.message.clear();
        if manual && !bypass_approval {
            rec.phase = RolloutPhase::AwaitingApproval as i32;
            rec.awaiting_since_ms = now;
            rec.message = format!("revision {revision} awaits approval");
        } else {
            rec.phase = RolloutPhase::Progressing as i32;
            rec.awaiting_since_ms = 0;
        }
        rec.spec = Some(spec.clone());
        let revision_record = RevisionRecord {
            revision,
            spec: Some(spec.clone()),
            created_at_ms: now,
            outcome: rec.phase,
            message: String::new(),
            release: release_id(&spec),
        };
        let history = self.prune_history(name, &rec, &spec).await?;
        // A new deployment's environment must still be there when it lands.
        let guard = match expect {
            Expect::Absent => self.environments.guard(&spec.environment).await?,
            _ => None,
        };
        for _ in 0..VIP_ATTEMPTS {
            // The first revision with service ports gets the VIP, reserved in the same write.
            let claim = if spec.service_ports.is_empty() || !rec.virtual_ip.is_empty() {
                None
            } else {
                let ip = vips::free(self.store.as_ref(), self.service_network).await?;
                Some((ip, vips::claim(ip, name)))
            };
            let mut written = rec.clone();
            if let Some((ip, _)) = &claim {
                written.virtual_ip = ip.to_string();
            }
            // The deployment, its revision and its VIP land together, or none does.
            let mut ops = vec![
                Op::Put {
                    key: deployment_key(name),
                    value: records::encode(&written),
                    expect,
                },
                Op::Put {
                    key: revision_key(name, revision),
                    value: records::encode(&revision_record),
                    expect: Expect::Absent,
                },
            ];
            ops.extend(claim.map(|(_, op)| op));
            ops.extend(history.iter().cloned());
            ops.extend(guard.iter().cloned());
            match self.store.txn(ops).await {
                Ok(_) => {
                    tracing::info!(deployment = %name, revision, manual, virtual_ip = %written.virtual_ip, "new revision");
                    return Ok(());
                }
                // Another deployment took that VIP first: pick again.
                Err(e) if vips::lost_race(&e) => continue,
                Err(e) => return Err(conflict_as(e, format!("applying deployment {name}"))),
            }
        }
        Err(SchedError::Conflict {
            what: format!("allocating a virtual IP for deployment {name}"),
        })
    }
    /// Deletes of revision records beyond the history limit (never the stable or current one).
    async fn prune_history(
        &self,
        name: &str,
        rec: &DeploymentRecord,
        spec: &DeploymentSpec,
    ) -> Result<Vec<Op>, SchedError> {
        let limit = spec
            .rollout
            .as_ref()
            .map_or(spec::DEFAULT_HISTORY, |r| r.history_limit)
            .max(1);
        // A limit beyond the address space keeps everything.
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let (kvs, _) = self.store.list(&revisions_prefix(name)).await?;
        let keep = [rec.revision, rec.stable_revision];
        let old: Vec<_> = kvs
            .into_iter()
            .filter_map(|kv| revision_number(&kv.key).map(|r| (r, kv.key)))
            .filter(|(r, _)| !keep.contains(r))
            .collect();
        // The new revision takes one place in the history.
        let excess = (old.len() + 1).saturating_sub(limit);
        Ok(old
            .into_iter()
            .take(excess)
            .map(|(_, key)| Op::Delete {
                key,
                expect: Expect::Any,
            })
            .collect())
    }

    /// Deletes the deployment and all its revision records (its replicas go with the next
    /// pass of the control loop).
    pub(crate) async fn delete(&self, name: &str) -> Result<(), SchedError> {
        let (rec, mod_rev) = self.load(name).await?;
        let (revisions, _) = self.store.list(&revisions_prefix(name)).await?;
        let mut ops = vec![Op::Delete {
            key: deployment_key(name),
            expect: Expect::Revision(mod_rev),
        }];
        // Its virtual IP is free again once the deployment is gone, not before.
        ops.extend(vips::release(&rec));
        ops.extend(revisions.into_iter().map(|kv| Op::Delete {
            key: kv.key,
            expect: Expect::Any,
        }));
        self.store.txn(ops).await?;
        tracing::info!(deployment = %name, "deleted");
        Ok(())
    }

    /// Sets the replica count of the current revision (no new revision).
    pub(crate) async fn scale(&self, name: &str, replicas: u32) -> Result<(), SchedError> {
        if replicas > spec::MAX_REPLICAS {
            return Err(SchedError::invalid(
                "replicas",
                format!("{replicas} is above the limit of {}", spec::MAX_REPLICAS),
            ));
        }
        let (mut rec, mod_rev) = self.load(name).await?;
        if let Some(s) = rec.spec.as_mut() {
            s.replicas = replicas;
        }
        self.save(name, &rec, mod_rev).await
    }

    /// Lets the rollout that awaits approval proceed.
    pub(crate) async fn approve(&self, name: &str, now: i64) -> Result<(), SchedError> {
        let (mut rec, mod_rev) = self.load(name).await?;
        if rec.phase != RolloutPhase::AwaitingApproval as i32 {
            return Err(SchedError::FailedPrecondition(format!(
                "deployment {} has no rollout awaiting approval (revision {} is {})",
                key::describe(name),
                rec.revision,
                phase_name(rec.phase)
            )));
        }
        rec.phase = RolloutPhase::Progressing as i32;
        rec.progress_at_ms = now;
        rec.awaiting_since_ms = 0;
        rec.message = format!("revision {} approved", rec.revision);
        self.save(name, &rec, mod_rev).await?;
        self.metrics.approved(name);
        self.set_outcome(name, rec.revision, RolloutPhase::Progressing, "approved")
            .await
    }

    /// Rejects the rollout that awaits approval (a caller's decision, or its timeout).
    pub(crate) async fn reject_awaiting(&self, name: &str, why: &str) -> Result<(), SchedError> {
        let (mut rec, mod_rev) = self.load(name).await?;
        if rec.phase != RolloutPhase::AwaitingApproval as i32 {
            return Err(SchedError::FailedPrecondition(format!(
                "deployment {} has no rollout awaiting approval",
                key::describe(name)
            )));
        }
        self.reject(name, &mut rec, why).await?;
        self.save(name, &rec, mod_rev).await
    }

    /// Rolls out revision `to`'s spec (0: the newest earlier revision that still has a record)
    /// as a new revision, at today's scale and without waiting for approval.
    pub(crate) async fn rollback(&self, name: &str, to: u64, now: i64) -> Result<(), SchedError> {
        let (rec, mod_rev) = self.load(name).await?;
        let to = if to != 0 {
            to
        } else {
            let (kvs, _) = self.store.list(&revisions_prefix(name)).await?;
            kvs.iter()
                .filter_map(|kv| revision_number(&kv.key))
                .filter(|r| *r < rec.revision)
                .max()
                .ok_or_else(|| {
                    SchedError::FailedPrecondition(format!(
                        "deployment {} has no earlier revision",
                        key::describe(name)
                    ))
                })?
        };
        let mut spec = self
            .spec_of(name, to)
            .await?
            .ok_or_else(|| SchedError::NotFound {
                what: format!("revision {to} of deployment {}", key::describe(name)),
            })?;
        spec.replicas = rec.spec.as_ref().map_or(spec.replicas, |s| s.replicas);
        // The versions it pinned must still exist (a deleted config or secret is refused).
        let spec = self.files.pin(spec).await?;
        // A rollback is an emergency measure: it does not wait for approval.
        self.new_revision(name, spec, Some((rec, mod_rev)), true, now)
            .await?;
        self.metrics.rolled_back(name);
        Ok(())
    }

    /// The revision records kept for `name`, oldest first.
    pub(crate) async fn history(&self, name: &str) -> Result<Vec<RevisionRecord>, SchedError> {
        self.load(name).await?;
        let (kvs, _) = self.store.list(&revisions_prefix(name)).await?;
        kvs.iter()
            .map(|kv| records::decode::<RevisionRecord>(&kv.key, &kv.value))
            .collect()
    }
}

/// A store conflict as the domain's Conflict on `what`; other store errors as they are.
fn conflict_as(e: StoreError, what: String) -> SchedError {
    match e {
        StoreError::Conflict { .. } => SchedError::Conflict { what },
        e => e.into(),
    }
}

/// The revision number at the end of a revision key.
fn revision_number(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.parse().ok()
}

/// A request above the largest allocatable any registered node offers can never run. With no
/// node registered yet, anything may fit later.
pub(crate) fn check_fits_somewhere(
    spec: &DeploymentSpec,
    nodes: &[(String, Resources)],
) -> Result<(), SchedError> {
    let want = spec.resources.unwrap_or_default();
    let fits =
        |a: &Resources| a.cpu_millis >= want.cpu_millis && a.memory_bytes >= want.memory_bytes;
    if nodes.is_empty() || nodes.iter().any(|(_, a)| fits(a)) {
        return Ok(());
    }
    Err(SchedError::FailedPrecondition(format!(
        "spec.resources: {}m cpu and {} bytes of memory fit on no node (largest allocatable: {})",
        want.cpu_millis,
        want.memory_bytes,
        nodes
            .iter()
            .map(|(n, a)| format!("{n} {}m/{}B", a.cpu_millis, a.memory_bytes))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn phase_name(phase: i32) -> String {
    RolloutPhase::try_from(phase)
        .map(|p| {
            p.as_str_name()
                .trim_start_matches("ROLLOUT_PHASE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// A count for the API, which has 32 bits for it (a deployment never has more than
/// `spec::MAX_REPLICAS` replicas).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The API's view of a deployment: its record, replicas (with the statuses their nodes
/// reported) and, for pending ones, why they are not placed.
pub(crate) fn describe(
    name: &str,
    rec: &DeploymentRecord,
    mod_rev: u64,
    replicas: &[ReplicaRecord],
    statuses: &HashMap<String, (String, ContainerStatus)>,
    reasons: &HashMap<String, String>,
) -> Deployment {
    let mut replica_status: Vec<ReplicaStatus> = replicas
        .iter()
        .filter(|r| r.deployment == name)
        .map(|r| replica_status(r, statuses, reasons))
        .collect();
    replica_status.sort_by(|a, b| a.container_id.cmp(&b.container_id));
    let current = || replica_status.iter().filter(|r| r.revision == rec.revision);
    Deployment {
        spec: rec.spec.clone(),
        revision: rec.revision,
        stable_revision: rec.stable_revision,
        phase: rec.phase,
        message: rec.message.clone(),
        replicas: count(replica_status.len()),
        ready_replicas: count(current().filter(|r| r.ready).count()),
        updated_replicas: count(current().count()),
        resource_version: mod_rev,
        replica_status,
        virtual_ip: virtual_ip(rec),
        environment: String::new(),
        release: stable_release(rec),
    }
}

/// The release the stable revision runs: recorded when its rollout completed (a record from
/// before releases existed: computed when the stable revision is the current one).
pub(crate) fn stable_release(rec: &DeploymentRecord) -> String {
    match &rec.spec {
        _ if !rec.stable_release.is_empty() => rec.stable_release.clone(),
        Some(spec) if rec.stable_revision != 0 && rec.stable_revision == rec.revision => {
            release_id(spec)
        }
        _ => String::new(),
    }
}

/// The deployment's virtual IP while its spec declares service ports.
pub(crate) fn virtual_ip(rec: &DeploymentRecord) -> String {
    match &rec.spec {
        Some(s) if !s.service_ports.is_empty() => rec.virtual_ip.clone(),
        _ => String::new(),
    }
}

fn replica_status(
    r: &ReplicaRecord,
    statuses: &HashMap<String, (String, ContainerStatus)>,
    reasons: &HashMap<String, String>,
) -> ReplicaStatus {
    let s = statuses
        .get(&r.container_id)
        .filter(|(n, _)| *n == r.node)
        .map(|(_, s)| s);
    ReplicaStatus {
        container_id: r.container_id.clone(),
        revision: r.revision,
        node: r.node.clone(),
        state: s.map_or(ContainerState::Pending as i32, |s| s.state),
        ready: s.is_some_and(|s| s.ready && s.state == ContainerState::Running as i32),
        reason: if r.node.is_empty() {
            reasons
                .get(&r.container_id)
                .cloned()
                .unwrap_or_else(|| "Pending".into())
        } else {
            s.map(|s| s.reason.clone()).unwrap_or_default()
        },
        message: s.map(|s| s.message.clone()).unwrap_or_default(),
        ip: s.map(|s| s.ip.clone()).unwrap_or_default(),
        restart_count: s.map_or(0, |s| s.restart_count),
    }
}

/// The event for a watcher of revision `watched`, final when its rollout is over.
pub(crate) fn event_for(
    d: &Deployment,
    watched: u64,
    stop_at_approval: bool,
    now: i64,
) -> RolloutEvent {
    let mut phase = RolloutPhase::try_from(d.phase).unwrap_or(RolloutPhase::Unspecified);
    let mut message = d.message.clone();
    if d.revision != watched {
        // The watched revision was replaced: rolled back after failing, or superseded.
        if d.message.contains(&format!("revision {watched} failed"))
            || d.message
                .contains(&format!("rolled back from revision {watched}"))
        {
            phase = RolloutPhase::RolledBack;
        } else if d.message.contains(&format!("revision {watched} rejected")) {
            phase = RolloutPhase::Rejected;
        } else {
            message = format!(
                "revision {watched} was superseded by revision {}",
                d.revision
            );
            phase = RolloutPhase::Failed;
        }
    }
    let r#final = match phase {
        RolloutPhase::Complete
        | RolloutPhase::Failed
        | RolloutPhase::RolledBack
        | RolloutPhase::Rejected => true,
        RolloutPhase::AwaitingApproval => stop_at_approval,
        _ => false,
    };
    RolloutEvent {
        deployment: d.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
        revision: d.revision,
        phase: phase as i32,
        replicas: d.spec.as_ref().map_or(0, |s| s.replicas),
        ready_replicas: d.ready_replicas,
        updated_replicas: d.updated_replicas,
        message,
        at_ms: now,
        r#final,
    }
}

#[cfg(test)]
mod tests;
