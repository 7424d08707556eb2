//! `berth image rm REF...`: remove image names.

use crate::Context;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Image names or digests to remove.
    #[arg(required = true)]
    references: Vec<String>,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let store = super::open_store(ctx)?;
    let mut removed = Vec::new();
    for reference in &args.references {
        let descriptor = store.untag(reference)?;
        removed.push(serde_json::json!({
            "reference": reference,
            "digest": descriptor.digest().to_string(),
        }));
        if ctx.output() == OutputFormat::Table {
            println!("Untagged: {reference} ({})", descriptor.digest());
        }
    }
    if ctx.output() == OutputFormat::Json {
        print_json(&removed)?;
    }
    Ok(())
}
