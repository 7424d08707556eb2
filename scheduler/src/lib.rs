//! berth-scheduler: the control plane. Agents register and stream status through
//! NodeService; pipelines and the CLI apply deployments through DeploymentService; a control
//! loop places replicas (filter, then score), rolls deployments out and replaces what lost
//! nodes ran. State lives behind the [`store::Store`] interface.

pub mod audit;
pub mod auth;
pub(crate) mod clock;
pub(crate) mod cluster;
pub(crate) mod controller;
pub(crate) mod dashboard;
pub(crate) mod deployments;
pub(crate) mod environments;
pub(crate) mod error;
pub mod events;
pub mod files;
pub(crate) mod grpc;
pub mod ha;
pub mod metrics;
pub(crate) mod nodes;
pub(crate) mod pin_image;
pub mod placement;
pub(crate) mod records;
pub(crate) mod release_id;
pub(crate) mod releases;
pub(crate) mod rollout;
pub mod secrets;
pub(crate) mod server;
pub(crate) mod services;
pub(crate) mod spec;
pub mod store;
pub(crate) mod vips;
pub(crate) mod volumes;

pub use server::{Config, check_config, run};
