//! Local containers run by `berth run` without a daemon: their on-disk layout, setup and
//! teardown, detached containers under berth-shim, and the terminal proxy.

pub mod detached;
pub mod layout;
pub mod pty;
pub mod setup;
