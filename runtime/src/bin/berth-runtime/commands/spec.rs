//! `spec [--bundle DIR]`: writes runc's default config.json (never over an existing one).

use std::path::PathBuf;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let path = args.bundle.join("config.json");
    if path.exists() {
        anyhow::bail!("{} already exists; remove it first", path.display());
    }
    let json = serde_json::to_string_pretty(&berth_runtime::spec::default_spec())?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))
}
