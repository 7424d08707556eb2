//! berth-agent: the node daemon that runs the containers the scheduler assigns, wires them
//! to the node's network and reports capacity and status over the berth.v1 protocol.

pub mod capacity;
pub mod cgroup;
pub(crate) mod config;
pub mod containers;
pub(crate) mod dial;
pub mod dns;
pub(crate) mod error;
pub(crate) mod files;
pub(crate) mod grpc;
pub mod layout;
pub mod logs;
pub(crate) mod metrics;
pub mod net;
pub(crate) mod probe;
pub mod restart;
pub(crate) mod server;
pub(crate) mod session;
pub mod shim;
pub mod tls;

pub use config::Config;
pub use server::run;
