//! berth-agent: the node daemon that runs the containers the scheduler assigns, wires them
//! to the node's network and reports capacity and status over the berth.v1 protocol.

pub mod layout;
pub mod net;
pub mod shim;
pub mod logs;
pub mod probe;
pub mod restart;
