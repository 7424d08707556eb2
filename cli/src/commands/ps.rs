//! `berth ps`: local containers with their status.

use serde::Serialize;

use crate::Context;
use crate::container::layout::{self, Status};
use crate::output::{OutputFormat, print_rows};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Also list containers that are not running.
    #[arg(short, long)]
    all: bool,
    #[command(flatten)]
    agent: crate::remote::AgentArg,
}

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    name: String,
    image: String,
    command: Vec<String>,
    status: String,
    created: String,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    if let Some(agent) = &args.agent.agent {
        return remote(agent, &args, ctx.output());
    }
    if let Some(scheduler) = &ctx.scheduler {
        return cluster(scheduler, &args, ctx.output());
    }
    let mut rows = Vec::new();
    for (paths, meta) in layout::list(&ctx.data_dir)? {
        let status = layout::status(&paths, &meta);
        if !args.all && !matches!(status, Status::Running | Status::Created) {
            continue;
        }
        rows.push(Row {
            id: meta.id,
            name: meta.name,
            image: meta.image,
            command: meta.command,
            status: status.to_string(),
            created: meta.created,
        });
    }
    print_rows(
        ctx.output(),
        &rows,
        &["ID", "IMAGE", "COMMAND", "STATUS", "CREATED", "NAME"],
        |r| {
            let mut command = r.command.join(" ");
            if command.chars().count() > 30 {
                command = command.chars().take(29).collect::<String>() + "…";
            }
            vec![
                r.id.chars().take(12).collect(),
                r.image.clone(),
                command,
                r.status.clone(),
                r.created.clone(),
                r.name.clone(),
            ]
        },
    )
}

/// A container as its node's agent reports it.
#[derive(Debug, Serialize)]
struct NodeRow {
    node: String,
    id: String,
    deployment: String,
    image: String,
    state: String,
    ready: bool,
    restarts: u32,
    exit_code: i32,
    reason: String,
    message: String,
    ip: String,
    pid: u32,
}

fn remote(agent: &str, args: &Args, output: OutputFormat) -> anyhow::Result<()> {
    use berth_proto::v1::ContainerState;
    let listed = crate::remote::list_containers(agent)?;
    let rows: Vec<NodeRow> = listed
        .containers
        .into_iter()
        .filter(|c| args.all || c.state == ContainerState::Running as i32)
        .map(|c| node_row(&listed.node_name, c))
        .collect();
    print_node_rows(&rows, output, false)
}

fn node_row(node: &str, c: berth_proto::v1::ContainerStatus) -> NodeRow {
    use berth_proto::v1::ContainerState;
    NodeRow {
        node: node.to_string(),
        state: ContainerState::try_from(c.state)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("CONTAINER_STATE_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|_| "unknown".into()),
        id: c.container_id,
        deployment: c.deployment,
        image: c.image,
        ready: c.ready,
        restarts: c.restart_count,
        exit_code: c.exit_code,
        reason: c.reason,
        message: c.message,
        ip: c.ip,
        pid: c.pid,
    }
}

/// `--scheduler`: every node's containers, through the scheduler.
fn cluster(scheduler: &str, args: &Args, output: OutputFormat) -> anyhow::Result<()> {
    use berth_proto::v1::{ContainerState, ListClusterContainersRequest};
    let listed = crate::cluster::with_client(scheduler, async |mut client| {
        client
            .list_containers(ListClusterContainersRequest {
                environment: crate::cluster::environment(),
                ..Default::default()
            })
            .await
            .map_err(crate::cluster::status_error)
            .map(|r| r.into_inner().containers)
    })?;
    let rows: Vec<NodeRow> = listed
        .into_iter()
        .filter_map(|c| c.status.map(|s| (c.node, s)))
        .filter(|(_, s)| args.all || s.state == ContainerState::Running as i32)
        .map(|(node, s)| node_row(&node, s))
        .collect();
    print_node_rows(&rows, output, true)
}

fn print_node_rows(rows: &[NodeRow], output: OutputFormat, with_node: bool) -> anyhow::Result<()> {
    let header = [
        "NODE", "ID", "IMAGE", "STATE", "READY", "RESTARTS", "IP", "REASON",
    ];
    print_rows(output, rows, &header[usize::from(!with_node)..], |r| {
        let mut row = vec![
            r.id.clone(),
            r.image.clone(),
            r.state.clone(),
            if r.ready { "yes" } else { "no" }.to_string(),
            r.restarts.to_string(),
            r.ip.clone(),
            r.reason.clone(),
        ];
        if with_node {
            row.insert(0, r.node.clone());
        }
        row
    })
}
