//! `run -d`: the container starts under a `berth-shim` (the agent's per-container supervisor),
//! which keeps its output in size-capped rotated logs, waits for it and records its exit; with
//! `--rm` the shim then runs `berth rm ID` as its exit command.

use std::ffi::OsString;
use std::path::Path;

use anyhow::Context as _;
use berth_shim::{ShimConfig, ShimState};

use super::layout::{Meta, Paths};
use super::setup::Guard;

/// Each log part's cap: ctr.log and one older part, ctr.log.1, so at most twice this.
pub(crate) const LOG_MAX_BYTES: u64 = 1 << 20;

/// Log parts kept in all, ctr.log included.
pub(crate) const LOG_FILES: u32 = 2;

/// Starts the container under its shim and returns once it runs, or with the runtime's reason
/// when it did not start (its files then removed). On success the container's files outlive
/// this process, and its shim.json names the shim as the container's owner
/// ([`super::layout::owner_pid`]).
pub(crate) fn start(
    data_dir: &Path,
    paths: &Paths,
    meta: &Meta,
    guard: Guard,
) -> anyhow::Result<ShimState> {
    let cfg = shim_config(data_dir, meta)?;
    let started = crate::remote::block_on(async {
        berth_shim::start(&cfg, &paths.shim())
            .await
            .map_err(anyhow::Error::from)
    });
    // On error the guard's drop takes the container's files down (the shim has deleted the
    // runtime's state before it returned). Once it runs they are the shim's: with --rm its
    // exit command may remove them at any moment from here on.
    let state = started?;
    let _ = guard.disarm();
    Ok(state)
}

/// `berth-shim` and `berth-runtime` beside this executable or on PATH, the CLI's log limits,
/// and for `--rm` this executable's `rm` as the exit command.
fn shim_config(data_dir: &Path, meta: &Meta) -> anyhow::Result<ShimConfig> {
    let mut cfg = ShimConfig::beside_current_exe_or_on_path()?;
    cfg.log_max_bytes = LOG_MAX_BYTES;
    cfg.log_files = LOG_FILES;
    if meta.remove {
        let exe = std::env::current_exe().context("finding the berth executable")?;
        // Absolute: the shim outlives this process and must not depend on its cwd.
        let data_dir = std::path::absolute(data_dir)
            .with_context(|| format!("resolving {}", data_dir.display()))?;
        cfg.exit_command = vec![
            exe.into_os_string(),
            OsString::from("--data-dir"),
            data_dir.into_os_string(),
            OsString::from("rm"),
            OsString::from(&meta.id),
        ];
    }
    Ok(cfg)
}
