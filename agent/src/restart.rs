//! Restart decisions for exited containers, Kubernetes-like.
//!
//! Three pieces of pure logic, no I/O:
//!
//! * [`should_restart`] applies a [`RestartPolicy`] to an exit: `NEVER` always gives up,
//!   `ON_FAILURE` restarts non-zero exits until `max_retries` restarts have been made
//!   (0 = no limit), `ALWAYS` restarts regardless of the exit code.
//! * [`Backoff`] computes how long to wait before the next start: `base` doubled per
//!   earlier consecutive failure, capped at `max`; a run that lasted at least `reset_after`
//!   resets the count ([`Backoff::consecutive_after`]).
//! * [`crash_looping`] tells when the count of consecutive quick failures is high enough for
//!   the container's status reason to become [`CRASH_LOOP_REASON`].
//!
//! The agent's loop for one container is, on every failed exit:
//!
//! ```
//! # use std::time::Duration;
//! # use berth_agent::restart::{self, Backoff, Decision};
//! # use berth_proto::v1::RestartPolicy;
//! # let policy = RestartPolicy::default();
//! # let (exit_code, restarts, prior, ran_for) = (1, 0, 0, Duration::from_secs(2));
//! let backoff = Backoff::default();
//! // Failures in a row, counting this one (a long run in between starts over).
//! let consecutive = backoff.consecutive_after(prior, ran_for) + 1;
//! match restart::should_restart(&policy, exit_code, restarts) {
//!     Decision::Restart => {
//!         // 1st failure waits `base`, the 2nd 2×base, the 3rd 4×base, ...
//!         let wait = backoff.delay(consecutive - 1);
//!         let reason = restart::crash_looping(consecutive).then_some(restart::CRASH_LOOP_REASON);
//!         // ... report `reason`, sleep `wait`, start again, remember `consecutive`
//! #       let _ = (wait, reason);
//!     }
//!     Decision::GiveUp { reason } => {
//!         // ... leave the container exited, report `reason`
//! #       let _ = reason;
//!     }
//! }
//! ```

use std::time::Duration;

use berth_proto::v1::RestartPolicy;
use berth_proto::v1::restart_policy::Kind;

/// Status reason of a container that keeps failing quickly and waits in back-off.
pub const CRASH_LOOP_REASON: &str = "CrashLoopBackOff";

/// Consecutive quick failures from which a container counts as crash-looping.
pub const CRASH_LOOP_THRESHOLD: u32 = 3;

/// What to do with a container that has exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start it again (after the [`Backoff`] delay).
    Restart,
    /// Leave it exited; `reason` says why, for the container's status.
    GiveUp {
        /// Human-readable cause, e.g. `"exceeded 5 restarts"`.
        reason: String,
    },
}

/// The policy's kind; values this build does not know fall back to the proto default,
/// `ALWAYS`.
pub fn kind(policy: &RestartPolicy) -> Kind {
    Kind::try_from(policy.kind).unwrap_or(Kind::Always)
}

/// Decide whether a container that exited with `exit_code`, after `restarts_so_far`
/// restarts, is started again.
///
/// * `NEVER`: always [`Decision::GiveUp`].
/// * `ON_FAILURE`: exit code 0 gives up (the container completed); a non-zero code restarts
///   unless `max_retries` is non-zero and `restarts_so_far >= max_retries`, in which case it
///   gives up with reason `"exceeded N restarts"`.
/// * `ALWAYS` (and unknown kinds): always [`Decision::Restart`]; `max_retries` is ignored.
pub fn should_restart(policy: &RestartPolicy, exit_code: i32, restarts_so_far: u32) -> Decision {
    match kind(policy) {
        Kind::Never => Decision::GiveUp {
            reason: format!("exited {exit_code}; restart policy is never"),
        },
        Kind::OnFailure if exit_code == 0 => Decision::GiveUp {
            reason: "completed (exit 0); restart policy is on-failure".to_owned(),
        },
        Kind::OnFailure if policy.max_retries != 0 && restarts_so_far >= policy.max_retries => {
            Decision::GiveUp {
                reason: format!("exceeded {} restarts", policy.max_retries),
            }
        }
        Kind::OnFailure | Kind::Always => Decision::Restart,
    }
}

/// Whether `consecutive` failures in a row (the one just observed included; see
/// [`Backoff::consecutive_after`]) make the container crash-looping, i.e. its status reason
/// becomes [`CRASH_LOOP_REASON`].
pub fn crash_looping(consecutive: u32) -> bool {
    consecutive >= CRASH_LOOP_THRESHOLD
}

/// Exponential restart back-off.
///
/// The delay before a restart is `base * 2^n`, never more than `max`, where `n` counts the
/// failures in a row *before* the one being restarted from (0 for a first failure). A run
/// that lasted at least `reset_after` resets that count to 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after a first failure (no failure in a row before it).
    pub base: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// A run at least this long resets the consecutive-failure count.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// base 1 s, max 60 s, reset after 60 s.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// A back-off with the given parameters (see the field docs).
    pub fn new(base: Duration, max: Duration, reset_after: Duration) -> Self {
        Self {
            base,
            max,
            reset_after,
        }
    }

    /// The wait before a restart when `prior_failures` failures in a row preceded the one
    /// being restarted from: `min(max, base * 2^prior_failures)`, so `delay(0) == base`.
    /// Never overflows, whatever `prior_failures`.
    pub fn delay(&self, prior_failures: u32) -> Duration {
        let mut delay = self.base;
        // Double at most until the cap is reached (or the value saturates), so the loop is
        // bounded by ~log2(max/base) iterations, not by `prior_failures`.
        for _ in 0..prior_failures {
            if delay >= self.max || delay.is_zero() {
                break;
            }
            delay = delay.saturating_mul(2);
        }
        delay.min(self.max)
    }

    /// The failures-in-a-row count to carry on from after a run that lasted `ran_for`:
    /// `prior` (the count before that run) if the run was shorter than `reset_after`, 0 if
    /// it lasted at least that long. The exit that ended the run is *not* included; a
    /// caller recording a failure adds 1.
    pub fn consecutive_after(&self, prior: u32, ran_for: Duration) -> u32 {
        if ran_for >= self.reset_after {
            0
        } else {
            prior
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(kind: Kind, max_retries: u32) -> RestartPolicy {
        RestartPolicy {
            kind: kind as i32,
            max_retries,
        }
    }

    fn gave_up(d: &Decision) -> Option<&str> {
        match d {
            Decision::GiveUp { reason } => Some(reason),
            Decision::Restart => None,
        }
    }

    #[test]
    fn never_always_gives_up() {
        let p = policy(Kind::Never, 0);
        for code in [0, 1, 137, -1] {
            for restarts in [0, 5, u32::MAX] {
                let d = should_restart(&p, code, restarts);
                assert!(gave_up(&d).is_some(), "{code} {restarts}: {d:?}");
            }
        }
        let d = should_restart(&p, 2, 0);
        assert!(gave_up(&d).unwrap().contains("never"), "{d:?}");
    }

    #[test]
    fn always_restarts_regardless() {
        // max_retries is ignored by ALWAYS.
        let p = policy(Kind::Always, 2);
        for code in [0, 1, 137, -1] {
            for restarts in [0, 2, 3, u32::MAX] {
                assert_eq!(should_restart(&p, code, restarts), Decision::Restart);
            }
        }
    }

    #[test]
    fn default_policy_is_always() {
        let p = RestartPolicy::default();
        assert_eq!(kind(&p), Kind::Always);
        assert_eq!(should_restart(&p, 0, 100), Decision::Restart);
    }

    #[test]
    fn unknown_kind_falls_back_to_always() {
        let p = RestartPolicy {
            kind: 42,
            max_retries: 1,
        };
        assert_eq!(kind(&p), Kind::Always);
        assert_eq!(should_restart(&p, 1, 5), Decision::Restart);
    }

    #[test]
    fn on_failure_success_gives_up() {
        let p = policy(Kind::OnFailure, 0);
        let d = should_restart(&p, 0, 0);
        assert!(gave_up(&d).unwrap().contains("completed"), "{d:?}");
    }

    #[test]
    fn on_failure_restarts_until_max_retries() {
        let p = policy(Kind::OnFailure, 3);
        for restarts in 0..3 {
            assert_eq!(should_restart(&p, 1, restarts), Decision::Restart);
        }
        for restarts in [3, 4, u32::MAX] {
            let d = should_restart(&p, 1, restarts);
            assert_eq!(gave_up(&d), Some("exceeded 3 restarts"), "{restarts}");
        }
        // Negative codes (e.g. signal deaths reported as negative) are failures too.
        assert_eq!(should_restart(&p, -9, 0), Decision::Restart);
    }

    #[test]
    fn on_failure_unlimited_when_zero() {
        let p = policy(Kind::OnFailure, 0);
        for restarts in [0, 1, 1000, u32::MAX] {
            assert_eq!(should_restart(&p, 2, restarts), Decision::Restart);
        }
    }

    #[test]
    fn on_failure_max_one() {
        let p = policy(Kind::OnFailure, 1);
        assert_eq!(should_restart(&p, 1, 0), Decision::Restart);
        assert_eq!(
            gave_up(&should_restart(&p, 1, 1)),
            Some("exceeded 1 restarts")
        );
    }

    #[test]
    fn backoff_defaults() {
        let b = Backoff::default();
        assert_eq!(b.base, Duration::from_secs(1));
        assert_eq!(b.max, Duration::from_secs(60));
        assert_eq!(b.reset_after, Duration::from_secs(60));
        assert_eq!(
            Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(60),
                Duration::from_secs(60)
            ),
            b
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..10).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
    }

    #[test]
    fn backoff_huge_counts_do_not_overflow() {
        let b = Backoff::default();
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
        assert_eq!(b.delay(64), Duration::from_secs(60));
        assert_eq!(b.delay(65), Duration::from_secs(60));

        // An effectively unbounded cap saturates instead of overflowing.
        let wide = Backoff::new(Duration::from_nanos(1), Duration::MAX, Duration::ZERO);
        assert_eq!(wide.delay(u32::MAX), Duration::MAX);
        assert_eq!(wide.delay(10), Duration::from_nanos(1024));
        assert_eq!(wide.delay(0), Duration::from_nanos(1));

        let huge_base = Backoff::new(Duration::MAX, Duration::MAX, Duration::ZERO);
        assert_eq!(huge_base.delay(u32::MAX), Duration::MAX);
    }

    #[test]
    fn backoff_zero_base_and_small_max() {
        let zero = Backoff::new(Duration::ZERO, Duration::from_secs(60), Duration::ZERO);
        assert_eq!(zero.delay(0), Duration::ZERO);
        assert_eq!(zero.delay(u32::MAX), Duration::ZERO);

        // max below base: the cap wins even for the first delay.
        let capped = Backoff::new(
            Duration::from_secs(10),
            Duration::from_secs(3),
            Duration::from_secs(60),
        );
        assert_eq!(capped.delay(0), Duration::from_secs(3));
        assert_eq!(capped.delay(5), Duration::from_secs(3));

        // Non-power-of-two cap is hit exactly.
        let odd = Backoff::new(
            Duration::from_millis(300),
            Duration::from_millis(1000),
            Duration::from_secs(1),
        );
        let ms: Vec<u128> = (0..5).map(|n| odd.delay(n).as_millis()).collect();
        assert_eq!(ms, [300, 600, 1000, 1000, 1000]);
    }

    #[test]
    fn consecutive_keeps_count_after_quick_runs_and_resets_after_long_ones() {
        let b = Backoff::default();
        let quick = Duration::from_secs(2);
        assert_eq!(b.consecutive_after(0, quick), 0);
        assert_eq!(b.consecutive_after(4, quick), 4);
        assert_eq!(b.consecutive_after(u32::MAX, quick), u32::MAX);
        assert_eq!(b.consecutive_after(4, Duration::ZERO), 4);
        // Just under the threshold is still quick; exactly at it resets.
        assert_eq!(
            b.consecutive_after(4, Duration::from_secs(60) - Duration::from_nanos(1)),
            4
        );
        assert_eq!(b.consecutive_after(4, Duration::from_secs(60)), 0);
        assert_eq!(b.consecutive_after(u32::MAX, Duration::from_secs(3600)), 0);

        // reset_after of zero: every run resets.
        let always_reset = Backoff::new(b.base, b.max, Duration::ZERO);
        assert_eq!(always_reset.consecutive_after(7, Duration::ZERO), 0);
    }

    #[test]
    fn crash_loop_threshold() {
        assert!(!crash_looping(0));
        assert!(!crash_looping(1));
        assert!(!crash_looping(2));
        assert!(crash_looping(3));
        assert!(crash_looping(u32::MAX));
    }

    #[test]
    fn crash_loop_sequence() {
        // The agent's use: on each failed exit, n = consecutive_after(n, ran_for) + 1, wait
        // delay(n - 1), crash-looping from the third quick failure on; a long run clears it.
        let b = Backoff::default();
        let quick = Duration::from_millis(100);
        let mut n = 0;
        let mut delays = Vec::new();
        let mut looping = Vec::new();
        for _ in 0..4 {
            n = b.consecutive_after(n, quick) + 1;
            delays.push(b.delay(n - 1).as_secs());
            looping.push(crash_looping(n));
        }
        assert_eq!(delays, [1, 2, 4, 8]);
        assert_eq!(looping, [false, false, true, true]);
        n = b.consecutive_after(n, Duration::from_secs(120)) + 1;
        assert_eq!(n, 1);
        assert!(!crash_looping(n));
        assert_eq!(b.delay(n - 1), Duration::from_secs(1));
    }
}
