//! The agent's side of `berth-shim` (the `berth-shim` crate): its client, called with the
//! agent's [`ContainerPaths`].
//!
//! The shim process and its client live in the `berth_shim` crate, which `berth run -d`
//! uses too; these functions only hand it the container's shim files.

pub use berth_shim::{ExitRecord, ShimConfig, ShimError, ShimState, client, is_alive};

use crate::layout::ContainerPaths;

/// [`berth_shim::start`] for the agent's container.
pub async fn start(cfg: &ShimConfig, paths: &ContainerPaths) -> Result<ShimState, ShimError> {
    berth_shim::start(cfg, &paths.shim()).await
}

/// [`berth_shim::read_state`]: `shim.json`, if the shim has started the container.
pub fn read_state(paths: &ContainerPaths) -> Result<Option<ShimState>, ShimError> {
    berth_shim::read_state(&paths.shim())
}

/// [`berth_shim::read_exit`]: `exit.json`, if the container has ended.
pub fn read_exit(paths: &ContainerPaths) -> Result<Option<ExitRecord>, ShimError> {
    berth_shim::read_exit(&paths.shim())
}

/// [`berth_shim::lock_held`]: whether a shim runs for the container.
pub fn lock_held(paths: &ContainerPaths) -> bool {
    berth_shim::lock_held(&paths.shim())
}

/// [`berth_shim::wait_exit`] for the agent's container.
pub async fn wait_exit(paths: &ContainerPaths, state: &ShimState) -> Result<ExitRecord, ShimError> {
    berth_shim::wait_exit(&paths.shim(), state).await
}

/// [`berth_shim::stop`] for the agent's container.
pub async fn stop(
    cfg: &ShimConfig,
    paths: &ContainerPaths,
    state: &ShimState,
    grace: std::time::Duration,
) -> Result<ExitRecord, ShimError> {
    berth_shim::stop(cfg, &paths.shim(), state, grace).await
}
