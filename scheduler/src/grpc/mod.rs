//! The scheduler's gRPC services. Each handler decodes its request, calls the domain
//! (`deployments`, `environments`, `files`, `nodes`, `auth::Tokens`, the cluster's views) and
//! encodes the reply; errors become statuses in one place, `From<SchedError> for Status`
//! (`error.rs`).

pub(crate) mod auth;
pub(crate) mod deployments;
pub(crate) mod environments;
pub(crate) mod events;
pub(crate) mod files;
pub(crate) mod nodes;
pub(crate) mod promote;
pub(crate) mod releases;

use std::pin::Pin;

use futures::Stream;
use tonic::Status;

/// A server-streaming reply.
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;
