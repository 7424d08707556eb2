//! Promotion: the release serving in one environment (or a named one that completed there),
//! applied to another through the same path as Apply, so the target's approval policy holds.

use berth_proto::v1::{
    DeploymentSpec, PromoteRequest, PromoteResponse, Release, RevisionRecord, RolloutPhase,
};

use super::deployments::DeployApi;
use crate::environments::key;
use crate::error::SchedError;
use crate::release_id::{release_id, release_spec};

/// Promotes `req.app` from `req.from_environment` to `req.to_environment`.
pub(crate) async fn promote(
    api: &DeployApi,
    req: PromoteRequest,
) -> Result<PromoteResponse, SchedError> {
    let (from, to) = (
        key::normalize(&req.from_environment),
        key::normalize(&req.to_environment),
    );
    if from == to {
        return Err(SchedError::invalid(
            "to_environment",
            format!("{to:?} is the environment promoted from"),
        ));
    }
    api.environments.get(to).await?;
    let source = api.qualify(from, &req.app).await?;
    let record = completed_release(api, &source, from, &req.release).await?;
    let original = record.spec.clone().unwrap_or_default();
    let release = release_spec(&original);
    let target = key::qualified(to, &req.app);
    let replicas = match api.deployments.load(&target).await {
        Ok((rec, _)) => rec.spec.map_or(original.replicas, |s| s.replicas),
        Err(SchedError::NoSuchDeployment(_)) => original.replicas,
        Err(e) => return Err(e),
    };
    let spec = DeploymentSpec {
        environment: to.to_string(),
        replicas,
        ..release.clone()
    };
    let (deployment, changed) = api.apply_spec(spec).await?;
    tracing::info!(app = %req.app, %from, %to, release = %release_id(&release), changed, "promoted");
    let image_digest = release
        .image
        .split_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    Ok(PromoteResponse {
        release: Some(Release {
            id: release_id(&release),
            app: req.app,
            image: release.image.clone(),
            image_digest,
            spec: Some(release),
            // The source's record of it (the release records, where kept, know the first).
            created_at_ms: record.created_at_ms,
            first_environment: from.to_string(),
        }),
        deployment: Some(deployment),
        changed,
    })
}

/// The revision record of deployment `source` (in environment `from`) whose release is
/// promoted: the stable revision's, or release `wanted`'s, which must have completed there.
async fn completed_release(
    api: &DeployApi,
    source: &str,
    from: &str,
    wanted: &str,
) -> Result<RevisionRecord, SchedError> {
    let (rec, _) = api.deployments.load(source).await?;
    let history = api.deployments.history(source).await?;
    let found = history.into_iter().find(|r| {
        let completed =
            r.outcome == RolloutPhase::Complete as i32 || r.revision == rec.stable_revision;
        let chosen = if wanted.is_empty() {
            r.revision == rec.stable_revision
        } else {
            r.release == wanted
        };
        rec.stable_revision != 0 && completed && chosen
    });
    match found.filter(|r| r.spec.is_some()) {
        Some(record) => Ok(record),
        None if wanted.is_empty() => Err(SchedError::FailedPrecondition(format!(
            "{} has no completed release in {from}",
            key::split(source).1
        ))),
        None => Err(SchedError::FailedPrecondition(format!(
            "release {wanted} never completed in {from}"
        ))),
    }
}
