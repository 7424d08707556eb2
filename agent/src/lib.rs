//! berth-agent: the node daemon that runs the containers the scheduler assigns, wires them
//! to the node's network and reports capacity and status over the berth.v1 protocol.

pub mod capacity;
pub mod config;
pub mod containers;
pub mod dial;
pub mod error;
pub mod layout;
pub mod logs;
pub mod net;
pub mod probe;
pub mod restart;
pub mod server;
pub mod service;
pub mod session;
pub mod shim;
pub mod tls;

pub use config::Config;
pub use server::run;
