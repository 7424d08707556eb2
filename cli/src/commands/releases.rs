//! `berth releases [APP]`: what runs where. Per app and environment: the release serving (by
//! image digest), its revision, the rollout phase, ready/replicas and since when; then the
//! releases recorded, newest first.

use std::collections::HashMap;

use berth_proto::v1::{ListReleasesRequest, Release};
use serde::Serialize;

use crate::Context;
use crate::cluster;
use crate::output::{OutputFormat, print_json, print_table};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only this app (a deployment's name, without environment).
    app: Option<String>,
}

/// One app in one environment.
#[derive(Debug, Serialize)]
struct Serving {
    app: String,
    environment: String,
    /// The release the last completed rollout runs (empty: none completed).
    release: String,
    image: String,
    image_digest: String,
    revision: u64,
    phase: String,
    ready_replicas: u32,
    replicas: u32,
    /// When `release` completed here (0: unknown).
    since_ms: i64,
    /// The release a rollout in progress or awaiting approval moves to.
    pending_release: String,
}

#[derive(Debug, Serialize)]
struct ReleaseRow {
    id: String,
    app: String,
    image: String,
    image_digest: String,
    created_at_ms: i64,
    first_environment: String,
}

#[derive(Debug, Serialize)]
struct Listing {
    serving: Vec<Serving>,
    /// Newest first.
    releases: Vec<ReleaseRow>,
}

fn listing(reply: berth_proto::v1::ListReleasesResponse) -> Listing {
    let by_id: HashMap<&str, &Release> =
        reply.releases.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut serving = Vec::new();
    for app in &reply.apps {
        for s in &app.environments {
            let release = by_id.get(s.release.as_str());
            serving.push(Serving {
                app: app.app.clone(),
                environment: s.environment.clone(),
                release: s.release.clone(),
                image: release.map(|r| r.image.clone()).unwrap_or_default(),
                image_digest: release.map(|r| r.image_digest.clone()).unwrap_or_default(),
                revision: s.revision,
                phase: cluster::phase_name(s.phase),
                ready_replicas: s.ready_replicas,
                replicas: s.replicas,
                since_ms: s.completed_at_ms,
                pending_release: s.pending_release.clone(),
            });
        }
    }
    let releases = reply
        .releases
        .iter()
        .map(|r| ReleaseRow {
            id: r.id.clone(),
            app: r.app.clone(),
            image: r.image.clone(),
            image_digest: r.image_digest.clone(),
            created_at_ms: r.created_at_ms,
            first_environment: r.first_environment.clone(),
        })
        .collect();
    Listing { serving, releases }
}

/// The first 19 characters of a digest ("sha256:" and 12 hex), "-" for none.
fn short(digest: &str) -> String {
    if digest.is_empty() {
        "-".into()
    } else {
        digest.chars().take(19).collect()
    }
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let reply = cluster::with_release_client(ctx.scheduler(), async |mut client| {
        client
            .list_releases(ListReleasesRequest {
                app: args.app.clone().unwrap_or_default(),
            })
            .await
            .map_err(cluster::status_error)
            .map(|r| r.into_inner())
    })?;
    let listing = listing(reply);
    if ctx.output() == OutputFormat::Json {
        return print_json(&listing);
    }
    let since = |ms: i64| {
        if ms > 0 {
            format!("{} ago", cluster::age(ms))
        } else {
            "-".into()
        }
    };
    let rows: Vec<Vec<String>> = listing
        .serving
        .iter()
        .map(|s| {
            vec![
                s.app.clone(),
                s.environment.clone(),
                if s.release.is_empty() {
                    "-".into()
                } else {
                    s.release.clone()
                },
                short(&s.image_digest),
                s.revision.to_string(),
                s.phase.clone(),
                format!("{}/{}", s.ready_replicas, s.replicas),
                since(s.since_ms),
                s.pending_release.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "APP", "ENV", "RELEASE", "DIGEST", "REVISION", "PHASE", "READY", "SINCE", "PENDING",
        ],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = listing
        .releases
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.app.clone(),
                r.image.clone(),
                r.first_environment.clone(),
                since(r.created_at_ms),
            ]
        })
        .collect();
    print_table(&["RELEASE", "APP", "IMAGE", "FIRST ENV", "CREATED"], &rows);
    Ok(())
}
