//! `run ID --bundle DIR [--detach]`: create + start (+ wait + delete); the exit code is the
//! container's, 128+N for a signal.

use std::path::Path;

use super::ExitWith;

#[derive(Debug, clap::Args)]
#[group(skip)]
pub(crate) struct Args {
    #[command(flatten)]
    pub create: super::create::Args,
    /// Return once started, leaving the container running.
    #[arg(short, long)]
    pub detach: bool,
}

pub(crate) fn run(root: &Path, args: Args, systemd_cgroup: bool) -> anyhow::Result<()> {
    let opts = args.create.options(root, systemd_cgroup);
    if args.detach {
        berth_runtime::create(&opts)?;
        if let Err(e) = berth_runtime::start(root, &opts.id) {
            let _ = berth_runtime::delete(root, &opts.id, true);
            return Err(e.into());
        }
        return Ok(());
    }
    match berth_runtime::run(&opts)? {
        0 => Ok(()),
        code => Err(ExitWith(u8::try_from(code).unwrap_or(255)).into()),
    }
}
