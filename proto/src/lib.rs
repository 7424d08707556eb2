//! berth.v1 protocol: the .proto files under proto/ and the tonic code generated from them.
//!
//! `NodeService` is served by the scheduler and dialled by agents; `AgentService` is served
//! by each agent; `DeploymentService` is the scheduler's API for pipelines and the CLI. Both
//! daemons also serve `grpc.health.v1` and reflection ([`reflection`], `v1` and `v1alpha`) from
//! [`FILE_DESCRIPTOR_SET`].

pub mod errors;
pub mod leader;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "metrics")]
pub mod metrics_http;
pub mod mount_paths;
pub mod quantity;
#[cfg(feature = "reflection")]
pub mod reflection;
pub mod secrets_key;
pub mod security;
pub mod tls;

/// Generated messages, clients and servers of package `berth.v1`.
pub mod v1 {
    #![allow(
        missing_docs,
        missing_debug_implementations,
        clippy::all,
        clippy::pedantic
    )]
    tonic::include_proto!("berth.v1");
}

mod redact;

/// The encoded descriptors of berth.v1, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("berth_v1_descriptor");

/// Largest message either side accepts; bigger ones get ResourceExhausted, never a panic.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
