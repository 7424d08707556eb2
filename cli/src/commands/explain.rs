//! `berth explain`: what isolates a running container, in plain words and real values.
//!
//! The facts come from /proc and /sys of the container's host (berth_runtime::explain): read
//! here for a local container, by the node's agent for `--agent`, and through the scheduler
//! (which asks the container's agent) for `--scheduler`, so a container on another host is
//! explained by the machine that runs it.

use anyhow::{Context as _, bail};
use berth_runtime::explain::{Explanation, explain, report};

use crate::Context;
use crate::container::layout;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    agent: crate::remote::AgentArg,
    /// Container id or name (with --agent: the container id on that node; with --scheduler:
    /// a container id or a deployment, meaning its first ready replica).
    container: String,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let explanation = if let Some(agent) = &args.agent.agent {
        from_agent(agent, &args.container)?
    } else if let Some(scheduler) = &ctx.scheduler {
        from_scheduler(scheduler, &args.container)?
    } else {
        let (id, name, pid) = local_pid(&args.container, ctx)?;
        let config = layout::Paths::new(&ctx.data_dir, &id)
            .dir
            .join("config.json");
        let mut e = explain(id, name, pid, "this host".into())?;
        e.seccomp.profile = berth_runtime::explain::seccomp_profile(&config);
        e
    };
    match ctx.output() {
        OutputFormat::Json => print_json(&explanation),
        OutputFormat::Table => {
            print!("{}", report(&explanation));
            Ok(())
        }
    }
}

fn local_pid(key: &str, ctx: &Context) -> anyhow::Result<(String, String, i32)> {
    let (paths, meta) = layout::find(&ctx.data_dir, key)?;
    let state = berth_runtime::state(&paths.runtime_root, &paths.id)
        .with_context(|| format!("container {key} is not running"))?;
    use berth_runtime::state::Status;
    if !matches!(state.oci.status, Status::Running | Status::Created) || state.oci.pid <= 0 {
        bail!(
            "container {key} is not running ({}): only a live container has namespaces to explain",
            state.oci.status
        );
    }
    Ok((meta.id, meta.name, state.oci.pid))
}

/// The explanation the agent's node wrote, as the same document a local one is.
fn decode(reply: berth_proto::v1::ExplainResponse) -> anyhow::Result<Explanation> {
    serde_json::from_str(&reply.explanation_json).with_context(|| {
        format!(
            "node {} sent an explanation of {} this berth cannot read",
            reply.node_name, reply.container_id
        )
    })
}

/// `--agent`: the node's agent reads its own /proc; a container id prefix is resolved first.
fn from_agent(agent: &str, key: &str) -> anyhow::Result<Explanation> {
    let listed = crate::remote::list_containers(agent)?;
    let found: Vec<_> = listed
        .containers
        .iter()
        .filter(|c| c.container_id == key || c.container_id.starts_with(key))
        .collect();
    let id = match found.as_slice() {
        [one] => one.container_id.clone(),
        [] => bail!("no such container on node {}: {key}", listed.node_name),
        many => match many.iter().find(|c| c.container_id == key) {
            Some(exact) => exact.container_id.clone(),
            None => bail!("container id prefix {key} is ambiguous"),
        },
    };
    let reply = crate::remote::block_on(async {
        let mut client = crate::remote::connect(agent).await?;
        let reply = client
            .explain(berth_proto::v1::ExplainRequest { container_id: id })
            .await
            .map_err(crate::remote::status_error)?;
        Ok(reply.into_inner())
    })?;
    decode(reply)
}

/// `--scheduler`: the scheduler finds the container's node and asks its agent.
fn from_scheduler(scheduler: &str, target: &str) -> anyhow::Result<Explanation> {
    let reply = crate::cluster::with_client(scheduler, async |mut client| {
        let reply = client
            .explain(berth_proto::v1::ClusterExplainRequest {
                target: target.to_string(),
                environment: crate::cluster::environment(),
            })
            .await
            .map_err(crate::cluster::status_error)?;
        Ok(reply.into_inner())
    })?;
    decode(reply)
}
