//! Local containers run by `berth run` without a daemon: their on-disk layout, setup and
//! teardown, the detached supervisor and the terminal proxy.

pub mod layout;
pub mod pty;
pub mod setup;
pub mod supervisor;
