//! `state ID`: the OCI state JSON, indented as runc prints it.

use std::path::Path;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    pub id: String,
}

pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    let state = berth_runtime::state(root, &args.id)?;
    println!("{}", serde_json::to_string_pretty(&state.oci)?);
    Ok(())
}
