//! Wall-clock time as the records berth writes store it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is set before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    fn ms(t: SystemTime) -> i64 {
        i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
    }

    #[test]
    fn now_ms_counts_milliseconds_since_the_epoch() {
        let before = ms(SystemTime::now());
        let now = super::now_ms();
        let after = ms(SystemTime::now());
        // Bracketed by the same clock read before and after (not a wall-clock figure).
        assert!(before <= now && now <= after, "{before} {now} {after}");
    }
}
