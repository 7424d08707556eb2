//! Pulling images from registries into the store, and pushing them from it, over the OCI
//! distribution API (v2).
//!
//! [`pull`] resolves a reference to one platform's manifest (negotiating OCI and docker
//! schema 2 media types), verifies every manifest's digest, downloads the blobs the store
//! lacks a few at a time, and names the image. Authentication answers the registry's 401
//! challenges: HTTP basic, or bearer tokens from the challenge's realm.
//!
//! [`resolve_digest`] asks the registry which manifest digest a reference names (for pinning).
//!
//! [`push`] sends the blobs the registry lacks (mounting them from another repository of the
//! same registry when the store knows one that holds them, uploading them whole or in chunks
//! otherwise), then the manifest. Both share one client, authentication and error set.

mod auth;
mod blob;
mod challenge;
mod client;
mod error;
mod manifest;
mod pull;
mod push;
mod resolve;
mod sources;
mod transport;
mod upload;

pub use crate::platform::{Platform, PlatformError};
pub use auth::Credentials;
pub use challenge::{Challenge, parse_challenges};
pub use error::{Operation, RegistryError, Target};
pub use pull::{PullOptions, Pulled, pull};
pub use push::{DEFAULT_CHUNK_SIZE, PushOptions, Pushed, PushedBlob, push};
pub use resolve::resolve_digest;
pub use transport::{DEFAULT_REGISTRY, Endpoint, is_loopback};
