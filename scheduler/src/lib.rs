//! berth-scheduler: the control plane. Agents register and stream status through
//! NodeService; pipelines and the CLI apply deployments through DeploymentService; a control
//! loop places replicas (filter, then score), rolls deployments out and replaces what lost
//! nodes ran. State lives behind the [`store::Store`] interface.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod controller;
pub mod error;
pub mod ha;
pub mod nodes;
pub mod placement;
pub mod records;
pub mod rollout;
pub mod server;
pub mod spec;
pub mod store;

pub use server::{Config, run};
