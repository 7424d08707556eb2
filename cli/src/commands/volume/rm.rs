//! `berth volume rm [-f] NAME...`: remove volumes and their content.

use crate::Context;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Remove volumes in use too (their containers keep running, the files are gone).
    #[arg(short, long)]
    force: bool,
    /// Volume names.
    #[arg(required = true)]
    names: Vec<String>,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let store = super::open_store(ctx)?;
    let mut removed = Vec::new();
    for name in &args.names {
        store.remove(name, args.force)?;
        if ctx.output() == OutputFormat::Table {
            println!("{name}");
        }
        removed.push(name.clone());
    }
    if ctx.output() == OutputFormat::Json {
        print_json(&removed)?;
    }
    Ok(())
}
