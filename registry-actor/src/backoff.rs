//! Capped exponential backoff with jitter.
//!
//! Every retry loop of grpc-cluster (re-registering, re-watching, ejection) waits
//! `min × 2^attempt`, capped at `max`, with "equal jitter": the wait is drawn
//! uniformly from `[d/2, d]`, so a crowd of clients that failed together does not
//! come back together, and no wait is ever shorter than half the nominal delay.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use registry_actor::Backoff;
//!
//! let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
//! let first = b.next_delay();
//! assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
//! for _ in 0..20 {
//!     assert!(b.next_delay() <= Duration::from_secs(2));
//! }
//! b.reset();
//! assert!(b.next_delay() <= Duration::from_millis(100));
//! ```

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff with equal jitter. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `min` and never exceeding `max` (`max` is raised to
    /// `min` when smaller).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The nominal (un-jittered) delay of the next attempt.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The delay to wait before the next attempt; advances the attempt count.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        let spread = nominal - half;
        if spread.is_zero() {
            return nominal;
        }
        half + spread.mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over from `min`, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delays_stay_within_half_nominal_and_cap(min_ms in 1u64..5_000, max_ms in 1u64..60_000, n in 1usize..80) {
            let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(max_ms));
            let mut b = Backoff::new(min, max);
            let cap = max.max(min);
            let mut last_nominal = Duration::ZERO;
            for _ in 0..n {
                let nominal = b.nominal();
                prop_assert!(nominal >= last_nominal, "nominal delay never shrinks");
                prop_assert!(nominal <= cap);
                let d = b.next_delay();
                prop_assert!(d >= nominal / 2 && d <= nominal, "{d:?} outside [{:?}, {nominal:?}]", nominal / 2);
                last_nominal = nominal;
            }
        }
    }

    #[test]
    fn doubles_then_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let nominals: Vec<_> = (0..5)
            .map(|_| {
                let n = b.nominal();
                b.next_delay();
                n.as_millis()
            })
            .collect();
        assert_eq!(nominals, [100, 200, 400, 700, 700]);
        assert_eq!(b.attempts(), 5);
        b.reset();
        assert_eq!(b.nominal(), Duration::from_millis(100));
    }
}
