//! The deployments domain against a real redb store in a temporary directory.

use berth_proto::v1::RolloutSettings;

use super::*;
use crate::store::redb::RedbStore;

const NOW: i64 = 1_000;

fn open(dir: &tempfile::TempDir) -> Deployments {
    let store = RedbStore::open(&dir.path().join("state.redb")).expect("open the store");
    Deployments::new(Arc::new(store), "10.96.0.0/16".parse().unwrap())
}

fn spec(image: &str) -> DeploymentSpec {
    DeploymentSpec {
        name: "web".into(),
        image: image.into(),
        replicas: 3,
        ..Default::default()
    }
}

fn with_rollout(mut s: DeploymentSpec, f: impl FnOnce(&mut RolloutSettings)) -> DeploymentSpec {
    f(s.rollout.get_or_insert_with(Default::default));
    s
}

fn manual(s: DeploymentSpec) -> DeploymentSpec {
    with_rollout(s, |r| r.approval = Approval::Manual as i32)
}

async fn revisions(d: &Deployments) -> Vec<u64> {
    let history = d.history("web").await.expect("history");
    history.iter().map(|r| r.revision).collect()
}

/// Marks the current revision complete and stable, as the control loop does.
async fn complete(d: &Deployments) {
    let (mut rec, mod_rev) = d.load("web").await.unwrap();
    rec.stable_revision = rec.revision;
    rec.phase = RolloutPhase::Complete as i32;
    d.save("web", &rec, mod_rev).await.unwrap();
}

#[tokio::test]
async fn apply_makes_a_revision_only_when_the_spec_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&dir);
    assert_eq!(
        d.apply(spec("web:1"), &[], NOW).await.unwrap(),
        ("web".into(), true)
    );
    assert_eq!(
        d.apply(spec("web:1"), &[], NOW).await.unwrap(),
        ("web".into(), false)
    );
    assert_eq!(
        d.apply(spec("web:2"), &[], NOW).await.unwrap(),
        ("web".into(), true)
    );
    let (rec, _) = d.load("web").await.unwrap();
    assert_eq!((rec.revision, rec.last_revision), (2, 2));
    assert_eq!(rec.phase, RolloutPhase::Progressing as i32);
    assert_eq!(rec.spec.unwrap().image, "web:2");
    assert_eq!(revisions(&d).await, vec![1, 2]);
    assert_eq!(d.names().await.unwrap(), vec!["web".to_string()]);
    let bad = d.apply(spec(""), &[], NOW).await.unwrap_err();
    assert!(bad.to_string().contains("spec.image"), "{bad}");
}

#[tokio::test]
async fn history_keeps_the_limit_and_the_stable_revision() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&dir);
    let limited = |image: &str| with_rollout(spec(image), |r| r.history_limit = 3);
    for i in 1..=5 {
        d.apply(limited(&format!("web:{i}")), &[], NOW)
            .await
            .unwrap();
    }
    assert_eq!(revisions(&d).await, vec![3, 4, 5]);
    complete(&d).await;
    for i in 6..=8 {
        d.apply(limited(&format!("web:{i}")), &[], NOW)
            .await
            .unwrap();
    }
    // Revision 5 is stable: kept beyond the limit of the others.
    assert_eq!(revisions(&d).await, vec![5, 6, 7, 8]);
}

#[tokio::test]
async fn manual_approval_waits_until_approved() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&dir);
    d.apply(manual(spec("web:1")), &[], NOW).await.unwrap();
    let (rec, _) = d.load("web").await.unwrap();
    assert_eq!(rec.phase, RolloutPhase::AwaitingApproval as i32);
    assert_eq!(rec.awaiting_since_ms, NOW);
    d.approve("web", NOW + 5).await.unwrap();
    let (rec, _) = d.load("web").await.unwrap();
    assert_eq!(rec.phase, RolloutPhase::Progressing as i32);
    assert_eq!((rec.awaiting_since_ms, rec.progress_at_ms), (0, NOW + 5));
    let history = d.history("web").await.unwrap();
    assert_eq!(history[0].outcome, RolloutPhase::Progressing as i32);
    assert_eq!(history[0].message, "approved");
    let again = d.approve("web", NOW).await.unwrap_err();
    assert!(
        matches!(&again, SchedError::FailedPrecondition(m) if m.contains("is progressing")),
        "{again}"
    );
}

#[tokio::test]
async fn a_rejection_returns_to_the_stable_revision_at_todays_scale() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&dir);
    d.apply(spec("web:1"), &[], NOW).await.unwrap();
    complete(&d).await;
    let mut next = manual(spec("web:2"));
    next.replicas = 5;
    d.apply(next, &[], NOW).await.unwrap();
    d.reject_awaiting("web", "rejected").await.unwrap();
    let (rec, _) = d.load("web").await.unwrap();
    assert_eq!((rec.revision, rec.last_revision), (1, 2));
    assert_eq!(rec.phase, RolloutPhase::Complete as i32);
    assert_eq!(rec.message, "revision 2 rejected: rejected");
    let spec = rec.spec.unwrap();
    assert_eq!((spec.image.as_str(), spec.replicas), ("web:1", 5));
    let history = d.history("web").await.unwrap();
    assert_eq!(history[1].outcome, RolloutPhase::Rejected as i32);
    let none = d.reject_awaiting("web", "rejected").await.unwrap_err();
    assert!(matches!(none, SchedError::FailedPrecondition(_)), "{none}");
}

#[tokio::test]
async fn a_rejection_without_a_stable_revision_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&dir);
    d.apply(manual(spec("web:1")), &[], NOW).await.unwrap();
    let (mut rec, mod_rev) = d.load("web").await.unwrap();
    d.reject("web", &mut rec, "approval timed out")
        .await
        .unwrap();
    d.save("web", &rec, mod_rev).await.unwrap();
    let (rec, _) = d.load("web").await.unwrap();
    assert_eq!((rec.revision, rec.stable_revision), (1, 0));
    assert_eq!(rec.phase, RolloutPhase::Rejected as i32);
    assert_eq!(rec.message, "revision 1 rejected: approval timed out");
}

#[tokio::test]
async fn rollback_rolls_out_an_earlier_spec_without_approval() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&dir);
    let early = d.rollback("web", 0, NOW).await.unwrap_err();
    assert!(matches!(early, SchedError::NoSuchDeployment(_)), "{early}");
    d.apply(manual(spec("web:1")), &[], NOW).await.unwrap();
    let first = d.rollback("web", 0, NOW).await.unwrap_err();
    assert!(first.to_string().contains("no earlier revision"), "{first}");
    d.approve("web", NOW).await.unwrap();
    let mut second = manual(spec("web:2"));
    second.replicas = 7;
    d.apply(second, &[], NOW).await.unwrap();
    d.rollback("web", 0, NOW).await.unwrap();
    let (rec, _) = d.load("web").await.unwrap();
    assert_eq!(rec.revision, 3);
    assert_eq!(
        rec.phase,
        RolloutPhase::Progressing as i32,
        "no approval wait"
    );
    let spec = rec.spec.unwrap();
    assert_eq!((spec.image.as_str(), spec.replicas), ("web:1", 7));
    let gone = d.rollback("web", 42, NOW).await.unwrap_err();
    assert!(
        matches!(&gone, SchedError::NotFound { what } if what.contains("revision 42")),
        "{gone}"
    );
}

/// The one `spec_of`: a revision record without a spec (never written so, so corrupt) is no
/// spec at all, rather than an empty default spec that would be rolled out.
#[tokio::test]
async fn spec_of_is_none_for_a_missing_revision_or_a_record_without_a_spec() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&dir);
    d.apply(spec("web:1"), &[], NOW).await.unwrap();
    let found = d.spec_of("web", 1).await.unwrap().expect("revision 1");
    assert_eq!(found.image, "web:1");
    assert_eq!(d.spec_of("web", 2).await.unwrap(), None);
    let empty = RevisionRecord {
        revision: 2,
        ..Default::default()
    };
    d.store
        .put(
            &revision_key("web", 2),
            records::encode(&empty),
            Expect::Absent,
        )
        .await
        .unwrap();
    assert_eq!(d.spec_of("web", 2).await.unwrap(), None);
}

#[tokio::test]
async fn scale_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&dir);
    d.apply(spec("web:1"), &[], NOW).await.unwrap();
    d.scale("web", 9).await.unwrap();
    let (rec, _) = d.load("web").await.unwrap();
    assert_eq!((rec.revision, rec.spec.unwrap().replicas), (1, 9));
    let too_many = d.scale("web", spec::MAX_REPLICAS + 1).await.unwrap_err();
    assert!(too_many.to_string().contains("replicas"), "{too_many}");
    d.delete("web").await.unwrap();
    let gone = d.load("web").await.unwrap_err();
    assert!(matches!(gone, SchedError::NoSuchDeployment(_)), "{gone}");
    let (left, _) = d.store.list(&revisions_prefix("web")).await.unwrap();
    assert!(left.is_empty(), "revisions left behind: {left:?}");
    let bad = d.load("Not A Name").await.unwrap_err();
    assert!(matches!(bad, SchedError::InvalidArgument { .. }), "{bad}");
}

#[tokio::test]
async fn a_stale_save_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&dir);
    d.apply(spec("web:1"), &[], NOW).await.unwrap();
    let (rec, mod_rev) = d.load("web").await.unwrap();
    d.save("web", &rec, mod_rev).await.unwrap();
    let stale = d.save("web", &rec, mod_rev).await.unwrap_err();
    assert!(matches!(stale, SchedError::Conflict { .. }), "{stale}");
}

#[test]
fn a_request_must_fit_some_node() {
    let mut s = spec("web:1");
    s.resources = Some(Resources {
        cpu_millis: 2_000,
        memory_bytes: 1 << 30,
    });
    assert!(
        check_fits_somewhere(&s, &[]).is_ok(),
        "no node yet: may fit later"
    );
    let small = Resources {
        cpu_millis: 1_000,
        memory_bytes: 1 << 32,
    };
    let big = Resources {
        cpu_millis: 4_000,
        memory_bytes: 1 << 32,
    };
    let err = check_fits_somewhere(&s, &[("n1".into(), small)]).unwrap_err();
    assert!(
        matches!(&err, SchedError::FailedPrecondition(m) if m.contains("n1 1000m")),
        "{err}"
    );
    assert!(check_fits_somewhere(&s, &[("n1".into(), small), ("n2".into(), big)]).is_ok());
}

#[test]
fn a_watcher_of_a_replaced_revision_learns_why() {
    let d = |revision, message: &str| Deployment {
        revision,
        phase: RolloutPhase::Progressing as i32,
        message: message.into(),
        ..Default::default()
    };
    let rolled = event_for(
        &d(3, "revision 2 failed (boom); rolling back"),
        2,
        false,
        NOW,
    );
    assert_eq!(
        (rolled.phase, rolled.r#final),
        (RolloutPhase::RolledBack as i32, true)
    );
    let rejected = event_for(&d(1, "revision 2 rejected: no"), 2, false, NOW);
    assert_eq!(rejected.phase, RolloutPhase::Rejected as i32);
    let superseded = event_for(&d(4, ""), 2, false, NOW);
    assert_eq!(superseded.phase, RolloutPhase::Failed as i32);
    assert!(superseded.message.contains("superseded by revision 4"));
    let going = event_for(&d(2, ""), 2, false, NOW);
    assert!(!going.r#final);
    assert_eq!(going.at_ms, NOW);
}

fn service(name: &str) -> DeploymentSpec {
    DeploymentSpec {
        name: name.into(),
        service_ports: vec![berth_proto::v1::ServicePort {
            name: "http".into(),
            port: 80,
            target: 8080,
            protocol: berth_proto::v1::Protocol::Tcp as i32,
        }],
        ..spec("web:1")
    }
}

/// The VIP keys in the store, as (address, holder).
async fn vip_claims(d: &Deployments) -> Vec<(String, String)> {
    let (kvs, _) = d.store.list(records::VIPS).await.unwrap();
    kvs.into_iter()
        .map(|kv| {
            let ip = kv.key.trim_start_matches(records::VIPS).to_string();
            (ip, String::from_utf8(kv.value).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_service_keeps_its_vip_across_revisions_and_frees_it_on_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&dir);
    d.apply(spec("web:1"), &[], NOW).await.unwrap();
    assert_eq!(
        d.load("web").await.unwrap().0.virtual_ip,
        "",
        "no service ports: no VIP"
    );
    d.apply(service("web"), &[], NOW).await.unwrap();
    let (rec, _) = d.load("web").await.unwrap();
    assert_eq!(rec.virtual_ip, "10.96.0.1");
    let mut v2 = service("web");
    v2.image = "web:2".into();
    d.apply(v2, &[], NOW).await.unwrap();
    d.rollback("web", 0, NOW).await.unwrap();
    assert_eq!(
        d.load("web").await.unwrap().0.virtual_ip,
        "10.96.0.1",
        "stable"
    );
    assert_eq!(vip_claims(&d).await, [("10.96.0.1".into(), "web".into())]);
    d.apply(service("api"), &[], NOW).await.unwrap();
    assert_eq!(d.load("api").await.unwrap().0.virtual_ip, "10.96.0.2");
    d.delete("web").await.unwrap();
    assert_eq!(vip_claims(&d).await, [("10.96.0.2".into(), "api".into())]);
    d.apply(service("web2"), &[], NOW).await.unwrap();
    assert_eq!(
        d.load("web2").await.unwrap().0.virtual_ip,
        "10.96.0.1",
        "freed, reused"
    );
}

/// Thirty Applies of distinct services at once get thirty distinct VIPs, each reserved for
/// its deployment; after the store is closed and opened again (a restart), new services get
/// addresses no one holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_never_share_a_vip_even_across_a_restart() {
    const SERVICES: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let apply_all = |d: Arc<Deployments>, prefix: &'static str| async move {
        let barrier = Arc::new(tokio::sync::Barrier::new(SERVICES));
        let tasks: Vec<_> = (0..SERVICES)
            .map(|i| {
                let (d, barrier) = (d.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    d.apply(service(&format!("{prefix}{i}")), &[], NOW).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().expect("every apply succeeds");
        }
    };
    let d = Arc::new(open(&dir));
    apply_all(d.clone(), "a").await;
    let first = vip_claims(&d).await;
    drop(d);
    let d = Arc::new(open(&dir));
    apply_all(d.clone(), "b").await;
    let claims = vip_claims(&d).await;
    assert_eq!(claims.len(), 2 * SERVICES, "{claims:?}");
    assert!(
        first.iter().all(|c| claims.contains(c)),
        "kept across the restart"
    );
    for (ip, holder) in &claims {
        let (rec, _) = d.load(holder).await.unwrap();
        assert_eq!(&rec.virtual_ip, ip, "the record and its claim agree");
    }
    let distinct: std::collections::BTreeSet<&String> = claims.iter().map(|(ip, _)| ip).collect();
    assert_eq!(distinct.len(), 2 * SERVICES);
}
