//! `events [--stats] [--interval SECS] ID`: usage as JSON, once with `--stats`, otherwise
//! every interval until the container stops.

use std::path::Path;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print the statistics once and exit.
    #[arg(long)]
    pub stats: bool,
    /// Seconds between records (runc's default 5s is written `5s` or `5`).
    #[arg(long, default_value = "5")]
    pub interval: String,
    pub id: String,
}

pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    if args.stats {
        println!("{}", berth_runtime::container::stats(root, &args.id)?);
        return Ok(());
    }
    let secs: f64 =
        args.interval.trim_end_matches('s').parse().map_err(|_| {
            anyhow::anyhow!("--interval {:?}: expected seconds like 5s", args.interval)
        })?;
    loop {
        let state = berth_runtime::state(root, &args.id)?;
        if state.oci.status == berth_runtime::state::Status::Stopped {
            return Ok(());
        }
        println!("{}", berth_runtime::container::stats(root, &args.id)?);
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
}
