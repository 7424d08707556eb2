//! The host layer: the one home of small kernel and filesystem helpers that the runtime, the
//! image store, the agent, the shim and the CLI all need, with their `unsafe` kept here.

pub mod fd;
pub mod fs;
pub mod oom;
pub mod pidfd;
pub mod proc_stat;
pub mod time;
