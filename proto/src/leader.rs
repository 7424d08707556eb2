//! How a standby scheduler sends an agent to the leader: NodeService answers Unavailable with
//! the leader's URL in the `berth-leader` metadata, and the agent dials that URL next.

/// The metadata key that carries the leader's URL on a standby's refusal.
pub const LEADER_METADATA: &str = "berth-leader";

/// A standby's answer to an agent: Unavailable, naming the leader at `url`.
pub fn redirect(url: &str) -> tonic::Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Ok(value) = url.parse() {
        metadata.insert(LEADER_METADATA, value);
    }
    tonic::Status::with_metadata(
        tonic::Code::Unavailable,
        format!("this scheduler is a standby; the leader is at {url}"),
        metadata,
    )
}

/// The leader's URL a standby named when it turned an agent away, if it did.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    let url = status.metadata().get(LEADER_METADATA)?.to_str().ok()?;
    (!url.is_empty()).then(|| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_names_the_leader() {
        let status = redirect("http://127.0.0.1:7702");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            leader_hint(&status).as_deref(),
            Some("http://127.0.0.1:7702")
        );
        assert_eq!(leader_hint(&tonic::Status::unavailable("down")), None);
    }
}
