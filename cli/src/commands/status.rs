//! `berth status [NAME]`: every deployment's rollout, or one deployment with its replicas
//! (node, state, readiness and why a replica is pending or failing).

use berth_proto::v1::{Deployment, GetDeploymentRequest, ListDeploymentsRequest};
use serde::Serialize;

use crate::Context;
use crate::cluster::{self, Client, WaitArgs};
use crate::output::{OutputFormat, print_json, print_table};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// One deployment, with its replicas (default: all deployments).
    name: Option<String>,
    /// Every environment's deployments, not only --env's.
    #[arg(long, short = 'A', conflicts_with = "name")]
    all_environments: bool,
}

/// A deployment as `--output json` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct DeploymentJson {
    pub name: String,
    /// The environment it lives in ("default" when none was named).
    pub environment: String,
    /// The release its stable revision runs (empty until a rollout completed).
    pub release: String,
    pub image: String,
    pub revision: u64,
    pub stable_revision: u64,
    pub phase: String,
    pub message: String,
    pub replicas: u32,
    pub ready_replicas: u32,
    pub updated_replicas: u32,
    /// The service's virtual IP (empty: no service ports).
    pub virtual_ip: String,
    pub replica_status: Vec<ReplicaJson>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ReplicaJson {
    pub container_id: String,
    pub revision: u64,
    pub node: String,
    pub state: String,
    pub ready: bool,
    pub reason: String,
    pub message: String,
    pub ip: String,
    pub restart_count: u32,
}

impl From<&Deployment> for DeploymentJson {
    fn from(d: &Deployment) -> Self {
        let spec = d.spec.clone().unwrap_or_default();
        Self {
            name: spec.name,
            environment: if d.environment.is_empty() {
                cluster::DEFAULT_ENVIRONMENT.into()
            } else {
                d.environment.clone()
            },
            release: d.release.clone(),
            image: spec.image,
            revision: d.revision,
            stable_revision: d.stable_revision,
            phase: cluster::phase_name(d.phase),
            message: d.message.clone(),
            replicas: d.replicas,
            ready_replicas: d.ready_replicas,
            updated_replicas: d.updated_replicas,
            virtual_ip: d.virtual_ip.clone(),
            replica_status: d
                .replica_status
                .iter()
                .map(|r| ReplicaJson {
                    container_id: r.container_id.clone(),
                    revision: r.revision,
                    node: r.node.clone(),
                    state: cluster::state_name(r.state),
                    ready: r.ready,
                    reason: r.reason.clone(),
                    message: r.message.clone(),
                    ip: r.ip.clone(),
                    restart_count: r.restart_count,
                })
                .collect(),
        }
    }
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let deployments = cluster::with_client(ctx.scheduler(), async |mut client| {
        Ok(match &args.name {
            Some(name) => vec![
                client
                    .get(GetDeploymentRequest {
                        name: name.clone(),
                        environment: crate::cluster::environment(),
                    })
                    .await
                    .map_err(cluster::status_error)?
                    .into_inner(),
            ],
            None => {
                client
                    .list(ListDeploymentsRequest {
                        environment: crate::cluster::environment(),
                        all_environments: args.all_environments,
                    })
                    .await
                    .map_err(cluster::status_error)?
                    .into_inner()
                    .deployments
            }
        })
    })?;
    let json: Vec<DeploymentJson> = deployments.iter().map(DeploymentJson::from).collect();
    match (ctx.output(), args.name.is_some()) {
        (OutputFormat::Json, true) => print_json(&json[0]),
        (OutputFormat::Json, false) => print_json(&json),
        (OutputFormat::Table, true) => {
            print_one(&json[0]);
            Ok(())
        }
        (OutputFormat::Table, false) => {
            let rows: Vec<Vec<String>> = json
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.environment.clone(),
                        d.revision.to_string(),
                        d.stable_revision.to_string(),
                        d.phase.clone(),
                        format!("{}/{}", d.ready_replicas, d.replicas),
                        format!("{}/{}", d.updated_replicas, d.replicas),
                        if d.virtual_ip.is_empty() {
                            "-".into()
                        } else {
                            d.virtual_ip.clone()
                        },
                        d.image.clone(),
                        d.message.replace('\n', " "),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "ENV",
                    "REVISION",
                    "STABLE",
                    "PHASE",
                    "READY",
                    "UPDATED",
                    "VIRTUAL IP",
                    "IMAGE",
                    "MESSAGE",
                ],
                &rows,
            );
            Ok(())
        }
    }
}

fn print_one(d: &DeploymentJson) {
    println!("name:      {}", d.name);
    println!("env:       {}", d.environment);
    println!("image:     {}", d.image);
    if !d.release.is_empty() {
        println!("release:   {}", d.release);
    }
    println!("revision:  {} (stable {})", d.revision, d.stable_revision);
    println!("phase:     {}", d.phase);
    if !d.virtual_ip.is_empty() {
        println!("service:   {}", d.virtual_ip);
    }
    if !d.message.is_empty() {
        println!("message:   {}", d.message.replace('\n', " "));
    }
    println!(
        "replicas:  {} desired, {} ready, {} updated",
        d.replicas, d.ready_replicas, d.updated_replicas
    );
    if d.replica_status.is_empty() {
        return;
    }
    println!();
    let rows: Vec<Vec<String>> = d
        .replica_status
        .iter()
        .map(|r| {
            let why = match (r.reason.is_empty(), r.message.is_empty()) {
                (true, _) => r.message.clone(),
                (false, true) => r.reason.clone(),
                (false, false) => format!("{}: {}", r.reason, r.message),
            };
            vec![
                r.container_id.clone(),
                r.revision.to_string(),
                if r.node.is_empty() {
                    "-".into()
                } else {
                    r.node.clone()
                },
                r.state.clone(),
                if r.ready { "yes" } else { "no" }.to_string(),
                r.restart_count.to_string(),
                r.ip.clone(),
                why.replace('\n', " "),
            ]
        })
        .collect();
    print_table(
        &[
            "CONTAINER",
            "REVISION",
            "NODE",
            "STATE",
            "READY",
            "RESTARTS",
            "IP",
            "REASON",
        ],
        &rows,
    );
}

/// After approve / rollback: one line, or with `--wait` the rollout until it ends.
pub(crate) async fn after_change(
    client: &mut Client,
    d: Deployment,
    what: &str,
    wait: &WaitArgs,
    output: OutputFormat,
) -> anyhow::Result<i32> {
    let name = d.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    if !wait.wait {
        match output {
            OutputFormat::Json => print_json(&DeploymentJson::from(&d))?,
            OutputFormat::Table => println!(
                "{name}: {what}, revision {} {}",
                d.revision,
                cluster::phase_name(d.phase)
            ),
        }
        return Ok(0);
    }
    if output == OutputFormat::Table {
        println!("{name}: {what}, revision {}", d.revision);
    }
    cluster::wait_rollout(client, &name, d.revision, wait, output).await
}
