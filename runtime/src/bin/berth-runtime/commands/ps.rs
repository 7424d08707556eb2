//! `ps [--format table|json] ID [PS_ARGS...]`: json prints the pids; table filters `ps`
//! output (default `-ef`) to the container's processes, as runc does.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    pub id: String,
    /// Arguments for ps(1).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    let pids: Vec<i32> = berth_runtime::container::pids(root, &args.id)?
        .iter()
        .map(|p| p.as_raw())
        .collect();
    if args.format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    let ps_args = if args.ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        args.ps_args
    };
    let out = Command::new("ps")
        .args(&ps_args)
        .output()
        .context("running ps")?;
    anyhow::ensure!(
        out.status.success(),
        "ps {}: {}",
        ps_args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column")?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}
