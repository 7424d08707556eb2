//! `berth stop`: SIGTERM, then SIGKILL once the timeout passes; returns when the container's
//! owner has recorded its exit.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::Context;
use crate::container::layout::{self, Paths, Status};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    time: u64,
    /// Container id or name.
    container: String,
}

/// Stops a running container: TERM (or KILL with a zero timeout), waits, KILL, waits for its
/// owner to finish.
pub(crate) fn stop(paths: &Paths, owner_pid: i32, timeout: Duration) -> anyhow::Result<()> {
    let root = &paths.runtime_root;
    if let Ok(st) = berth_runtime::state(root, &paths.id) {
        let pid = st.oci.pid;
        let first = if timeout.is_zero() {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        let _ = berth_runtime::kill(root, &paths.id, first, false);
        if !berth_runtime::sys::pidfd::wait_exit(pid, timeout) {
            let _ = berth_runtime::kill(root, &paths.id, Signal::SIGKILL, true);
            if !berth_runtime::sys::pidfd::wait_exit(pid, Duration::from_secs(10)) {
                anyhow::bail!("container {} did not die after SIGKILL", paths.id);
            }
        }
    }
    // The owner (berth run or berth-shim) reaps the process, deletes the runtime state and
    // writes exit.json.
    if !berth_runtime::sys::pidfd::wait_exit(owner_pid, Duration::from_secs(10)) {
        anyhow::bail!("the owner of {} (pid {owner_pid}) did not finish", paths.id);
    }
    Ok(())
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let (paths, meta) = layout::find(&ctx.data_dir, &args.container)?;
    if layout::status(&paths, &meta) == Status::Running {
        stop(
            &paths,
            layout::owner_pid(&paths, &meta),
            Duration::from_secs(args.time),
        )?;
    }
    println!("{}", args.container);
    Ok(())
}
