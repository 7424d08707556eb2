//! `berth history NAME`: a deployment's revisions, each with how its rollout ended and the
//! config and secret versions it pins (names and versions only).

use std::collections::BTreeMap;

use berth_proto::v1::HistoryRequest;
use serde::Serialize;

use crate::Context;
use crate::cluster;
use crate::output::print_rows;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The deployment.
    name: String,
}

#[derive(Debug, Serialize)]
struct Row {
    revision: u64,
    created_at_ms: i64,
    outcome: String,
    image: String,
    replicas: u32,
    message: String,
    /// Config name -> the version the revision pins.
    configs: BTreeMap<String, u64>,
    /// Secret name -> the version the revision pins (mounts and env_from_secret).
    secrets: BTreeMap<String, u64>,
}

impl Row {
    /// `config:NAME@V secret:NAME@V ...` for the table.
    fn files(&self) -> String {
        let configs = self.configs.iter().map(|(n, v)| format!("config:{n}@{v}"));
        let secrets = self.secrets.iter().map(|(n, v)| format!("secret:{n}@{v}"));
        configs.chain(secrets).collect::<Vec<_>>().join(" ")
    }
}

/// The versions a spec pins, by name.
fn pinned(
    spec: &berth_proto::v1::DeploymentSpec,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let configs = spec
        .configs
        .iter()
        .map(|c| (c.name.clone(), c.version))
        .collect();
    let secrets = spec
        .secrets
        .iter()
        .map(|s| (s.name.clone(), s.version))
        .chain(
            spec.env_from_secret
                .iter()
                .map(|e| (e.secret.clone(), e.version)),
        )
        .collect();
    (configs, secrets)
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let history = cluster::with_client(ctx.scheduler(), async |mut client| {
        client
            .history(HistoryRequest {
                name: args.name.clone(),
                environment: crate::cluster::environment(),
            })
            .await
            .map_err(cluster::status_error)
            .map(|r| r.into_inner())
    })?;
    let rows: Vec<Row> = history
        .revisions
        .iter()
        .map(|r| {
            let spec = r.spec.clone().unwrap_or_default();
            let (configs, secrets) = pinned(&spec);
            Row {
                revision: r.revision,
                created_at_ms: r.created_at_ms,
                outcome: cluster::phase_name(r.outcome),
                image: spec.image,
                replicas: spec.replicas,
                message: r.message.clone(),
                configs,
                secrets,
            }
        })
        .collect();
    print_rows(
        ctx.output(),
        &rows,
        &[
            "REVISION", "CREATED", "OUTCOME", "IMAGE", "REPLICAS", "FILES", "MESSAGE",
        ],
        |r| {
            vec![
                r.revision.to_string(),
                format!("{} ago", cluster::age(r.created_at_ms)),
                r.outcome.clone(),
                r.image.clone(),
                r.replicas.to_string(),
                r.files(),
                r.message.replace('\n', " "),
            ]
        },
    )
}
