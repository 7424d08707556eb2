//! Pulling images from registries over the OCI distribution API (v2) into the store.
//!
//! [`pull`] resolves a reference to one platform's manifest (negotiating OCI and docker
//! schema 2 media types), verifies every manifest's digest, downloads the blobs the store
//! lacks a few at a time, and names the image. Authentication answers the registry's 401
//! challenges: HTTP basic, or bearer tokens from the challenge's realm.

mod auth;
mod blob;
mod challenge;
mod client;
mod error;
mod manifest;
mod pull;
mod transport;

pub use crate::platform::{Platform, PlatformError};
pub use auth::Credentials;
pub use challenge::{Challenge, parse_challenges};
pub use error::{RegistryError, Target};
pub use pull::{PullOptions, Pulled, pull};
pub use transport::{DEFAULT_REGISTRY, Endpoint, is_loopback};
