//! Resolving a reference to the digest of the manifest (or index) it names, without pulling:
//! what a scheduler pins a deployment's image to, so every node runs the same bytes.

use oci_spec::image::Digest;

use super::error::RegistryError;
use super::pull::{PullOptions, fetch_top, pull_client};
use crate::reference::Reference;

/// The digest of what `reference` names in its registry: the top-level manifest or index (as
/// `docker pull repo@digest` and Swarm's pinning use it), verified against the bytes fetched.
/// A reference by digest is checked to exist and keeps its digest. `options.platform` is not
/// used: an index's digest covers every platform.
pub async fn resolve_digest(
    reference: &Reference,
    options: &PullOptions,
) -> Result<Digest, RegistryError> {
    let client = pull_client(reference, options)?;
    Ok(fetch_top(&client, reference).await?.digest)
}
