//! `berth ps`: local containers with their status.

use serde::Serialize;

use crate::Context;
use crate::container::layout::{self, Status};
use crate::output::{OutputFormat, print_json, print_table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also list containers that are not running.
    #[arg(short, long)]
    all: bool,
    /// table for people, json for programs.
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
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

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
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
    match args.output {
        OutputFormat::Json => print_json(&rows),
        OutputFormat::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
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
                })
                .collect();
            print_table(
                &["ID", "IMAGE", "COMMAND", "STATUS", "CREATED", "NAME"],
                &table,
            );
            Ok(())
        }
    }
}
