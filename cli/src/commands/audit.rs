//! `berth audit`: the cluster's audit log, oldest first: who did what to which app in which
//! environment, from which release to which, and how it ended.

use berth_proto::v1::{AuditEntry, ListAuditRequest};
use serde::Serialize;

use crate::Context;
use crate::cluster;
use crate::output::{print_rows, timestamp};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only entries of this environment (all when not given).
    #[arg(long = "env", value_name = "ENV")]
    environment: Option<String>,
    /// Only entries of this app.
    #[arg(long)]
    app: Option<String>,
    /// Only the newest N entries (0: all).
    #[arg(long, default_value_t = 0)]
    limit: u32,
}

#[derive(Debug, Serialize)]
struct Row {
    seq: u64,
    at_ms: i64,
    who: String,
    action: String,
    environment: String,
    app: String,
    from_release: String,
    to_release: String,
    from_revision: u64,
    to_revision: u64,
    outcome: String,
    detail: String,
}

impl From<AuditEntry> for Row {
    fn from(e: AuditEntry) -> Self {
        Self {
            seq: e.seq,
            at_ms: e.at_ms,
            who: e.who,
            action: e.action,
            environment: e.environment,
            app: e.app,
            from_release: e.from_release,
            to_release: e.to_release,
            from_revision: e.from_revision,
            to_revision: e.to_revision,
            outcome: e.outcome,
            detail: e.detail,
        }
    }
}

/// "r-… (rev 3)", or "-" for nothing.
fn point(release: &str, revision: u64) -> String {
    match (release.is_empty(), revision) {
        (true, 0) => "-".into(),
        (true, r) => format!("rev {r}"),
        (false, r) => format!("{release} (rev {r})"),
    }
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let reply = cluster::with_release_client(ctx.scheduler(), async |mut client| {
        client
            .list_audit(ListAuditRequest {
                environment: cluster::environment_filter(args.environment.as_deref())
                    .unwrap_or_default(),
                app: args.app.clone().unwrap_or_default(),
                limit: args.limit,
                after_seq: 0,
            })
            .await
            .map_err(cluster::status_error)
            .map(|r| r.into_inner())
    })?;
    let rows: Vec<Row> = reply.entries.into_iter().map(Row::from).collect();
    print_rows(
        ctx.output(),
        &rows,
        &[
            "SEQ", "WHEN", "WHO", "ACTION", "ENV", "APP", "FROM", "TO", "OUTCOME", "DETAIL",
        ],
        |r| {
            vec![
                r.seq.to_string(),
                timestamp(r.at_ms),
                r.who.clone(),
                r.action.clone(),
                r.environment.clone(),
                r.app.clone(),
                point(&r.from_release, r.from_revision),
                point(&r.to_release, r.to_revision),
                r.outcome.clone(),
                r.detail.clone(),
            ]
        },
    )
}
