//! The scheduler's time: tokio's clock, so that a test with a paused clock drives heartbeat
//! grace, approval timeouts and progress deadlines without sleeping.
//!
//! Deadlines that live only in memory (heartbeats) are `tokio::time::Instant`s. Times that are
//! stored (`progress_at_ms`, `awaiting_since_ms`, `created_at_ms`) stay Unix milliseconds:
//! [`now_ms`] is the wall clock read once, plus tokio's monotonic time since then. In
//! production that is the wall clock without its jumps; under a paused clock it advances
//! only as the test advances it.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The wall clock and tokio's clock read together, the first time anyone asks.
static BASE: OnceLock<(i64, Instant)> = OnceLock::new();

/// Milliseconds since the Unix epoch, following tokio's clock.
pub(crate) fn now_ms() -> i64 {
    let (wall, at) = *BASE.get_or_init(|| (wall_ms(), Instant::now()));
    // Saturating: a base taken under another runtime's paused clock may lie ahead of this one.
    let elapsed = Instant::now().saturating_duration_since(at).as_millis();
    wall.saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
}

/// The wall clock in Unix milliseconds (0 if it is set before 1970).
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn is_unix_milliseconds() {
        let (now, wall) = (now_ms(), wall_ms());
        // Unix milliseconds, not a count from process start (a paused test elsewhere in
        // this process may have moved tokio's clock, hence the wide margin).
        assert!(
            (now - wall).abs() < 86_400_000,
            "now_ms {now}, wall clock {wall}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn follows_a_paused_clock() {
        let start = now_ms();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let later = now_ms();
        assert!(
            (3_600_000..3_601_000).contains(&(later - start)),
            "an hour of paused time moved now_ms by {} ms",
            later - start
        );
    }
}
