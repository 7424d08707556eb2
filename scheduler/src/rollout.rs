//! One step of a deployment's rollout, as a pure function of its record and its replicas:
//! which replicas to create and delete, and where the rollout stands. The controller applies
//! the step; keeping it pure makes the rolling-update arithmetic testable on its own.

use berth_proto::v1::RolloutPhase;

use crate::records::DeploymentRecord;
use crate::spec::surge_and_unavailable;

/// A replica as the rollout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaView {
    pub id: String,
    pub revision: u64,
    pub ready: bool,
    /// Set when the replica cannot work: crash loop, image error, refused by its node.
    pub broken: Option<String>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Step {
    /// New replicas to create, of `revision`.
    pub create: u32,
    pub revision: u64,
    pub delete: Vec<String>,
    pub phase: Option<RolloutPhase>,
    /// Why the rollout failed (the controller rolls back or marks it failed).
    pub failed: Option<String>,
    /// Ready replicas of the target revision: progress is when this grows.
    pub ready_target: u32,
}

fn phase(rec: &DeploymentRecord) -> RolloutPhase {
    RolloutPhase::try_from(rec.phase).unwrap_or(RolloutPhase::Unspecified)
}

/// The next step for `rec` given its replicas at `now_ms`.
pub(crate) fn step(rec: &DeploymentRecord, replicas: &[ReplicaView], now_ms: i64) -> Step {
    let spec = rec.spec.clone().unwrap_or_default();
    let n = spec.replicas;
    let current = phase(rec);
    // While a new revision waits for approval (or was rejected before any completed), the
    // stable revision keeps serving at full strength.
    let target = match current {
        RolloutPhase::AwaitingApproval => rec.stable_revision,
        _ => rec.revision,
    };
    let mut out = Step {
        revision: target,
        ..Default::default()
    };
    if target == 0 {
        // Nothing approved yet: nothing runs.
        out.delete = replicas.iter().map(|r| r.id.clone()).collect();
        return out;
    }
    let (mut new, mut old): (Vec<&ReplicaView>, Vec<&ReplicaView>) =
        replicas.iter().partition(|r| r.revision == target);
    // Oldest first, so scaling down removes the newest and replacements keep their age.
    new.sort_by_key(|r| (r.created_at_ms, r.id.clone()));
    old.sort_by_key(|r| (r.ready, r.created_at_ms, r.id.clone()));
    let ready_new = count(new.iter().filter(|r| r.ready).count());
    let ready_old = count(old.iter().filter(|r| r.ready).count());
    out.ready_target = ready_new;

    if current == RolloutPhase::Progressing {
        if let Some(broken) = new.iter().find_map(|r| r.broken.clone()) {
            out.failed = Some(broken);
        } else {
            let deadline_s = spec
                .rollout
                .as_ref()
                .map_or(crate::spec::DEFAULT_PROGRESS_DEADLINE_S, |r| {
                    r.progress_deadline_s
                });
            if rec.progress_at_ms > 0 && now_ms - rec.progress_at_ms > i64::from(deadline_s) * 1000
            {
                out.failed = Some(format!(
                    "progress deadline of {deadline_s}s exceeded: {ready_new} of {n} replicas of revision {target} ready"
                ));
            }
        }
    }

    // Scale the target revision up within the surge, or down to n.
    let (surge, unavailable) = surge_and_unavailable(&spec);
    let total = count(new.len() + old.len());
    let have_new = count(new.len());
    if have_new < n {
        let room = (n + surge).saturating_sub(total);
        // Old replicas that are not ready do not hold a place: replace them even without room.
        let unready_old = count(old.iter().filter(|r| !r.ready).count());
        out.create = (n - have_new).min(room.max(unready_old.min(n - have_new)));
    } else if have_new > n {
        let mut extra: Vec<&&ReplicaView> = new.iter().collect();
        // Remove not-ready ones first, then the newest.
        extra.sort_by_key(|r| (r.ready, std::cmp::Reverse(r.created_at_ms)));
        out.delete.extend(
            extra
                .iter()
                .take((have_new - n) as usize)
                .map(|r| r.id.clone()),
        );
    }

    // Retire old replicas while keeping n - unavailable ready.
    if ready_new >= n {
        out.delete.extend(old.iter().map(|r| r.id.clone()));
    } else {
        let min_ready = n.saturating_sub(unavailable);
        let mut removable = (ready_new + ready_old).saturating_sub(min_ready);
        for r in &old {
            if !r.ready {
                out.delete.push(r.id.clone());
            } else if removable > 0 {
                removable -= 1;
                out.delete.push(r.id.clone());
            }
        }
    }

    let old_left = old.iter().filter(|r| !out.delete.contains(&r.id)).count();
    if current == RolloutPhase::Progressing
        && out.failed.is_none()
        && have_new == n
        && ready_new == n
        && old_left == 0
    {
        out.phase = Some(RolloutPhase::Complete);
    }
    out
}

/// A replica count in the spec's 32 bits (a deployment has at most `spec::MAX_REPLICAS`).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::{DeploymentSpec, RolloutSettings};

    fn rec(n: u32, revision: u64, stable: u64, phase: RolloutPhase) -> DeploymentRecord {
        DeploymentRecord {
            spec: Some(DeploymentSpec {
                name: "web".into(),
                image: "web:1".into(),
                replicas: n,
                rollout: Some(RolloutSettings {
                    max_surge: "25%".into(),
                    max_unavailable: "25%".into(),
                    progress_deadline_s: 60,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            revision,
            stable_revision: stable,
            phase: phase as i32,
            progress_at_ms: 1_000,
            ..Default::default()
        }
    }

    fn r(id: &str, revision: u64, ready: bool) -> ReplicaView {
        ReplicaView {
            id: id.into(),
            revision,
            ready,
            broken: None,
            created_at_ms: 0,
        }
    }

    #[test]
    fn first_rollout_creates_all_replicas_then_completes() {
        let d = rec(4, 1, 0, RolloutPhase::Progressing);
        let s = step(&d, &[], 2_000);
        // No old replicas: surge room covers all four.
        assert_eq!((s.create, s.revision), (4, 1));
        let all: Vec<_> = (0..4).map(|i| r(&format!("n{i}"), 1, true)).collect();
        let s = step(&d, &all, 2_000);
        assert_eq!(s.create, 0);
        assert_eq!(s.phase, Some(RolloutPhase::Complete));
    }

    #[test]
    fn rolling_update_respects_surge_and_unavailable() {
        // 4 replicas: surge 1, unavailable 1.
        let d = rec(4, 2, 1, RolloutPhase::Progressing);
        let old: Vec<_> = (0..4).map(|i| r(&format!("o{i}"), 1, true)).collect();
        let s = step(&d, &old, 2_000);
        assert_eq!(s.create, 1, "one above the count");
        assert_eq!(s.delete.len(), 1, "one may be unavailable");
        // A new one ready: another old one may go.
        let mut now = old[1..].to_vec();
        now.push(r("n0", 2, true));
        now.push(r("n1", 2, false));
        let s = step(&d, &now, 2_000);
        assert_eq!(s.create, 0, "3 old + 2 new = 5 = 4 + surge");
        assert_eq!(s.delete.len(), 1);
        assert!(s.phase.is_none());
        // All new ready: every old one goes and the rollout completes.
        let done: Vec<_> = (0..4)
            .map(|i| r(&format!("n{i}"), 2, true))
            .chain([r("o3", 1, true)])
            .collect();
        let s = step(&d, &done, 2_000);
        assert_eq!(s.delete, vec!["o3".to_string()]);
        assert_eq!(s.phase, Some(RolloutPhase::Complete));
    }

    #[test]
    fn a_broken_replica_or_the_deadline_fails_the_rollout() {
        let d = rec(2, 2, 1, RolloutPhase::Progressing);
        let mut bad = r("n0", 2, false);
        bad.broken = Some("CrashLoopBackOff: exit 1".into());
        let s = step(&d, &[r("o0", 1, true), r("o1", 1, true), bad], 2_000);
        assert_eq!(s.failed.as_deref(), Some("CrashLoopBackOff: exit 1"));
        let s = step(&d, &[r("o0", 1, true), r("n0", 2, false)], 1_000 + 61_000);
        assert!(s.failed.unwrap().contains("progress deadline"));
        // Old replicas that are ready stay while the new ones are not.
        let s = step(
            &d,
            &[r("o0", 1, true), r("o1", 1, true), r("n0", 2, false)],
            2_000,
        );
        assert!(s.delete.len() <= 1);
    }

    #[test]
    fn awaiting_approval_keeps_the_stable_revision_serving() {
        let d = rec(3, 2, 1, RolloutPhase::AwaitingApproval);
        let s = step(&d, &[r("o0", 1, true)], 2_000);
        assert_eq!((s.create, s.revision), (2, 1));
        assert!(s.delete.is_empty());
        // Nothing approved ever: nothing runs.
        let d = rec(3, 1, 0, RolloutPhase::AwaitingApproval);
        let s = step(&d, &[r("x", 1, false)], 2_000);
        assert_eq!(s.create, 0);
        assert_eq!(s.delete, vec!["x".to_string()]);
    }

    #[test]
    fn a_complete_deployment_replaces_lost_replicas_and_scales() {
        let d = rec(3, 1, 1, RolloutPhase::Complete);
        let s = step(&d, &[r("a", 1, true)], 2_000);
        assert_eq!(s.create, 2);
        assert!(s.failed.is_none() && s.phase.is_none());
        let d = rec(1, 1, 1, RolloutPhase::Complete);
        let mut newest = r("c", 1, true);
        newest.created_at_ms = 9;
        let s = step(&d, &[r("a", 1, true), r("b", 1, false), newest], 2_000);
        assert_eq!(s.delete.len(), 2);
        assert!(s.delete.contains(&"b".to_string()) && s.delete.contains(&"c".to_string()));
    }
}
