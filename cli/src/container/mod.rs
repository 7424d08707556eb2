//! Local containers run by `berth run` without a daemon: their on-disk layout, setup and
//! teardown, mount flags, detached containers under berth-shim, and the terminal proxy; and
//! `berth build`'s RUN steps with their network.

pub(crate) mod detached;
pub(crate) mod layout;
pub(crate) mod mounts;
pub(crate) mod nat;
pub(crate) mod pty;
pub(crate) mod setup;
pub(crate) mod step;
