//! `list [--format table|json] [-q]`.

use std::path::Path;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Ids only.
    #[arg(short, long)]
    pub quiet: bool,
}

pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    let all = berth_runtime::container::list(root)?;
    if args.quiet {
        for c in &all {
            println!("{}", c.oci.id);
        }
    } else if args.format == "json" {
        let states: Vec<_> = all.iter().map(|c| &c.oci).collect();
        println!("{}", serde_json::to_string(&states)?);
    } else {
        println!(
            "{:<20} {:<8} {:<8} {:<40} {:<31} OWNER",
            "ID", "PID", "STATUS", "BUNDLE", "CREATED"
        );
        for c in &all {
            let s = &c.oci;
            let owner = if s.owner.is_empty() { "root" } else { &s.owner };
            println!(
                "{:<20} {:<8} {:<8} {:<40} {:<31} {owner}",
                s.id,
                if s.status == berth_runtime::state::Status::Stopped {
                    0
                } else {
                    s.pid
                },
                s.status,
                s.bundle.display(),
                s.created
            );
        }
    }
    Ok(())
}
