//! `berth volume create NAME [--label K=V]...`: make an empty named volume.

use std::collections::BTreeMap;

use anyhow::bail;

use crate::Context;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The volume's name: a letter or digit, then letters, digits, '_', '.' or '-'.
    name: String,
    /// A label to record (KEY=VALUE), repeatable.
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let mut labels = BTreeMap::new();
    for item in &args.label {
        match item.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                labels.insert(key.to_string(), value.to_string());
            }
            _ => bail!("--label {item:?}: expected KEY=VALUE"),
        }
    }
    let volume = super::open_store(ctx)?.create(&args.name, labels)?;
    match ctx.output() {
        OutputFormat::Json => print_json(&volume),
        OutputFormat::Table => {
            println!("{}", volume.name);
            Ok(())
        }
    }
}
