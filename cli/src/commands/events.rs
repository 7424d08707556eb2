//! `berth events`: the cluster's events, oldest first: nodes going ready or not ready,
//! containers changing state, rollout steps, approvals, promotions and audit entries.
//! `--follow` keeps streaming and resumes by itself after the last revision shown when the
//! stream drops (a scheduler failover, or this client dropped as too slow), so nothing is
//! missed or shown twice.

use std::io::Write as _;
use std::time::Duration;

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::errors::ErrorKind;
use berth_proto::v1::event_service_client::EventServiceClient;
use berth_proto::v1::{Event, EventKind, EventsRequest};
use serde::Serialize;

use crate::Context;
use crate::cluster;
use crate::output::{OutputFormat, print_rows, timestamp};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Keep streaming new events (JSON output: one object per line).
    #[arg(long, short)]
    follow: bool,
    /// Only events after revision REV (the REV column; 0: from the oldest kept).
    #[arg(long, default_value_t = 0, value_name = "REV")]
    since: u64,
    /// Only this environment's events (all when not given; node events belong to none).
    #[arg(long = "env", value_name = "ENV")]
    environment: Option<String>,
}

/// Stream drops in a row, with nothing received in between, before --follow gives up.
const RESUME_ATTEMPTS: u32 = 60;
const RESUME_PAUSE: Duration = Duration::from_millis(500);
const HEADER: [&str; 6] = ["REV", "WHEN", "KIND", "ENV", "DEPLOYMENT", "MESSAGE"];

#[derive(Debug, Serialize)]
struct Row {
    revision: u64,
    at_ms: i64,
    kind: String,
    environment: String,
    deployment: String,
    node: String,
    container_id: String,
    state: String,
    ready: bool,
    action: String,
    deployment_revision: u64,
    message: String,
}

impl From<Event> for Row {
    fn from(e: Event) -> Self {
        Self {
            revision: e.revision,
            at_ms: e.at_ms,
            kind: kind_name(e.kind),
            environment: e.environment,
            deployment: e.deployment,
            node: e.node,
            container_id: e.container_id,
            state: e.state,
            ready: e.ready,
            action: e.action,
            deployment_revision: e.deployment_revision,
            message: e.message,
        }
    }
}

/// "node-ready", "container", "rollout", ...
fn kind_name(kind: i32) -> String {
    EventKind::try_from(kind).map_or_else(
        |_| format!("kind-{kind}"),
        |k| {
            k.as_str_name()
                .trim_start_matches("EVENT_KIND_")
                .to_ascii_lowercase()
                .replace('_', "-")
        },
    )
}

fn cells(r: &Row) -> Vec<String> {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".into()
        } else {
            s.to_string()
        }
    };
    vec![
        r.revision.to_string(),
        timestamp(r.at_ms),
        r.kind.clone(),
        or_dash(&r.environment),
        or_dash(&r.deployment),
        r.message.replace('\n', " "),
    ]
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let request = |since| EventsRequest {
        since_revision: since,
        follow: args.follow,
        environment: crate::cluster::environment_filter(args.environment.as_deref())
            .unwrap_or_default(),
    };
    crate::remote::block_on(async {
        if !args.follow {
            let mut rows = Vec::new();
            stream(ctx, request(args.since), |e| rows.push(Row::from(e)))
                .await
                .map_err(cluster::status_error)?;
            return print_rows(ctx.output(), &rows, &HEADER, cells);
        }
        follow(ctx, args.since, request).await
    })
}

/// Streams from `since` on, resuming after the last event shown whenever the stream drops
/// for a reason a retry may cure.
async fn follow(
    ctx: &Context,
    mut since: u64,
    request: impl Fn(u64) -> EventsRequest,
) -> anyhow::Result<()> {
    let output = ctx.output();
    if output == OutputFormat::Table {
        println!("{}", line(&HEADER.map(String::from)));
    }
    let mut failures = 0;
    loop {
        let before = since;
        let ended = stream(ctx, request(since), |e| {
            since = e.revision;
            show(output, Row::from(e));
        })
        .await;
        let status = match ended {
            Ok(()) => tonic::Status::unavailable("the event stream ended"),
            Err(status) => status,
        };
        failures = if since == before { failures + 1 } else { 1 };
        // Anything but a refusal of the request itself is worth resuming after: a scheduler
        // gone or taking over, this client dropped as slow, the connection cut under the
        // stream (Cancelled, or Internal "h2 protocol error" when the peer dies).
        let refused = matches!(
            ErrorKind::of(&status),
            ErrorKind::InvalidArgument
                | ErrorKind::NotFound
                | ErrorKind::FailedPrecondition
                | ErrorKind::Unauthenticated
                | ErrorKind::PermissionDenied
                | ErrorKind::NotImplemented
        );
        if refused || failures > RESUME_ATTEMPTS {
            return Err(cluster::status_error(status));
        }
        eprintln!(
            "berth events: {}; resuming after revision {since}",
            status.message()
        );
        tokio::time::sleep(RESUME_PAUSE).await;
    }
}

/// Column widths of a followed table but the last (rows come one at a time: no table to
/// measure).
const WIDTHS: [usize; 5] = [6, 20, 14, 10, 16];

fn line(cells: &[String]) -> String {
    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        match WIDTHS.get(i) {
            Some(width) => out.push_str(&format!("{cell:<width$} ")),
            None => out.push_str(cell),
        }
    }
    out.trim_end().to_string()
}

/// One line per event, as it comes: aligned cells for people, a JSON object for programs.
fn show(output: OutputFormat, row: Row) {
    match output {
        OutputFormat::Table => println!("{}", line(&cells(&row))),
        OutputFormat::Json => match serde_json::to_string(&row) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("berth events: revision {}: {e}", row.revision),
        },
    }
    let _ = std::io::stdout().flush();
}

/// One Events call: each event to `each` until the stream ends (Ok) or fails.
async fn stream(
    ctx: &Context,
    request: EventsRequest,
    mut each: impl FnMut(Event),
) -> Result<(), tonic::Status> {
    let channel = cluster::channel(ctx.scheduler())
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
    let mut client = EventServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut events = client.events(request).await?.into_inner();
    while let Some(event) = events.message().await? {
        each(event);
    }
    Ok(())
}
