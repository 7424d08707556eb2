//! `berth volume prune`: remove every volume that no container uses.

use crate::Context;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(super) fn run(_args: Args, ctx: &Context) -> anyhow::Result<()> {
    let removed = super::open_store(ctx)?.prune()?;
    match ctx.output() {
        OutputFormat::Json => print_json(&serde_json::json!({ "removed": removed })),
        OutputFormat::Table => {
            for name in &removed {
                println!("deleted volume {name}");
            }
            println!("{} volumes removed", removed.len());
            Ok(())
        }
    }
}
