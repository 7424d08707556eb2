//! `berth env create|ls|rm`: environments (staging, production, ...), each with an approval
//! policy every rollout in it obeys and a node selector that keeps it on its own nodes.

use berth_proto::v1::environment_service_client::EnvironmentServiceClient;
use berth_proto::v1::{
    Approval, CreateEnvironmentRequest, DeleteEnvironmentRequest, Environment,
    ListEnvironmentsRequest,
};
use clap::Subcommand;
use serde::Serialize;

use crate::Context;
use crate::auth::AuthChannel;
use crate::cluster;
use crate::commands::image::build::parse_pair;
use crate::output::{OutputFormat, print_json, print_rows, timestamp};

#[derive(Debug, Subcommand)]
pub(crate) enum EnvCommand {
    /// Create an environment.
    Create(CreateArgs),
    /// List the environments (`default` always exists).
    Ls,
    /// Delete an environment (refused while deployments live in it).
    Rm(RmArgs),
}

/// Whether rollouts in the environment wait for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ApprovalArg {
    /// Roll out at once (unless a spec asks for approval).
    Auto,
    /// Every rollout waits for `berth approve`.
    Manual,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// A DNS label: it becomes part of service names (`hello.NAME.berth`).
    name: String,
    #[arg(long, value_enum, default_value = "auto")]
    approval: ApprovalArg,
    /// A node label every replica in the environment needs (KEY=VALUE; repeatable).
    #[arg(long = "node-selector", value_name = "KEY=VALUE", value_parser = parse_pair)]
    node_selector: Vec<(String, String)>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RmArgs {
    name: String,
}

/// An environment as `-o json` prints it.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    approval: String,
    node_selector: std::collections::BTreeMap<String, String>,
    deployments: u32,
    created: String,
}

impl From<Environment> for Row {
    fn from(e: Environment) -> Self {
        let approval = if e.approval == Approval::Manual as i32 {
            "manual"
        } else {
            "auto"
        };
        Row {
            name: e.name,
            approval: approval.into(),
            node_selector: e.node_selector,
            deployments: e.deployments,
            created: if e.created_at_ms == 0 {
                "-".into()
            } else {
                timestamp(e.created_at_ms)
            },
        }
    }
}

pub(crate) fn run(cmd: EnvCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        EnvCommand::Create(args) => create(args, ctx),
        EnvCommand::Ls => list(ctx),
        EnvCommand::Rm(args) => remove(args, ctx),
    }
}

fn with_client<T>(
    ctx: &Context,
    f: impl AsyncFnOnce(EnvironmentServiceClient<AuthChannel>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    crate::remote::block_on(async {
        f(EnvironmentServiceClient::new(
            cluster::channel(ctx.scheduler()).await?,
        ))
        .await
    })
}

fn create(args: CreateArgs, ctx: &Context) -> anyhow::Result<()> {
    let approval = match args.approval {
        ApprovalArg::Auto => Approval::Auto,
        ApprovalArg::Manual => Approval::Manual,
    };
    let environment = Environment {
        name: args.name,
        approval: approval as i32,
        node_selector: args.node_selector.into_iter().collect(),
        ..Default::default()
    };
    let created = with_client(ctx, async |mut client| {
        client
            .create_environment(CreateEnvironmentRequest {
                environment: Some(environment),
            })
            .await
            .map_err(cluster::status_error)
            .map(|r| r.into_inner())
    })?;
    let row = Row::from(created);
    match ctx.output() {
        OutputFormat::Json => print_json(&row),
        OutputFormat::Table => {
            println!(
                "environment {} created (approval {})",
                row.name, row.approval
            );
            Ok(())
        }
    }
}

fn list(ctx: &Context) -> anyhow::Result<()> {
    let environments = with_client(ctx, async |mut client| {
        client
            .list_environments(ListEnvironmentsRequest {})
            .await
            .map_err(cluster::status_error)
            .map(|r| r.into_inner().environments)
    })?;
    let rows: Vec<Row> = environments.into_iter().map(Row::from).collect();
    print_rows(
        ctx.output(),
        &rows,
        &[
            "NAME",
            "APPROVAL",
            "NODE SELECTOR",
            "DEPLOYMENTS",
            "CREATED",
        ],
        |r| {
            let selector: Vec<String> = r
                .node_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            vec![
                r.name.clone(),
                r.approval.clone(),
                if selector.is_empty() {
                    "-".into()
                } else {
                    selector.join(",")
                },
                r.deployments.to_string(),
                r.created.clone(),
            ]
        },
    )
}

fn remove(args: RmArgs, ctx: &Context) -> anyhow::Result<()> {
    let name = args.name.clone();
    with_client(ctx, async |mut client| {
        client
            .delete_environment(DeleteEnvironmentRequest { name: args.name })
            .await
            .map_err(cluster::status_error)
            .map(|_| ())
    })?;
    println!("environment {name} deleted");
    Ok(())
}
