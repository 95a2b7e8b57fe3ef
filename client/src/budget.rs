//! The per-service retry budget: every extra attempt of every strategy draws from it.
//!
//! The budget bounds extra attempts to `ratio` of the calls plus `min_per_sec` per
//! second. The defaults, 20 % of calls + 10/s, are Finagle's and Linkerd's: a retry
//! storm cannot multiply the load on a failing service.
//!
//! Two pools, in milli-tokens so the arithmetic is exact:
//!
//! * **deposits**: each call (its first attempt) deposits `ratio` of a token. The
//!   pool is capped at `min_per_sec` tokens, so a long calm spell cannot bank a
//!   storm's worth of retries.
//! * **reserve**: refills at `min_per_sec` tokens per second, up to `min_per_sec`
//!   tokens, so a service with little traffic can still retry.
//!
//! An extra attempt withdraws one token, from deposits first, then the reserve.
//! With no token left, the attempt is refused and the call ends with the error
//! it had. Over any span `T` with `C` calls, at most
//! `ratio × C + min_per_sec × T + 2 × min_per_sec` extra attempts are made.
//!
//! Time is passed in explicitly (`now`), so tests script it exactly.

use std::time::{Duration, Instant};

const MILLI: u64 = 1000;

/// The retry budget of one service: every extra attempt of a call (a failover
/// or failretry retry, an extra fork) takes a token; every call adds a share.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    /// Milli-tokens deposited per call.
    per_call: u64,
    /// Milli-tokens the reserve gains per second, and its cap.
    per_sec: u64,
    /// Cap of the deposit pool, in milli-tokens.
    deposit_cap: u64,
    deposits: u64,
    reserve: u64,
    refilled_at: Instant,
}

impl RetryBudget {
    /// A budget of `ratio` (0.0..=1.0) of the calls plus `min_per_sec` per second,
    /// starting with a full reserve at `now`.
    pub fn new(ratio: f64, min_per_sec: u32, now: Instant) -> Self {
        let per_call = (ratio.clamp(0.0, 1.0) * MILLI as f64).round() as u64;
        let per_sec = u64::from(min_per_sec) * MILLI;
        Self {
            per_call,
            per_sec,
            deposit_cap: per_sec.max(MILLI),
            deposits: 0,
            reserve: per_sec,
            refilled_at: now,
        }
    }

    /// Records one call (a first attempt).
    pub fn deposit(&mut self) {
        self.deposits = (self.deposits + self.per_call).min(self.deposit_cap);
    }

    /// Takes one token for an extra attempt at `now`; `false` when the budget is
    /// spent and the attempt must not be made.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.deposits >= MILLI {
            self.deposits -= MILLI;
            true
        } else if self.reserve >= MILLI {
            self.reserve -= MILLI;
            true
        } else {
            false
        }
    }

    /// The tokens available at `now` (deposits + reserve), in thousandths.
    pub fn milli_tokens(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.deposits + self.reserve
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let gained = (elapsed.as_micros() as u64).saturating_mul(self.per_sec) / 1_000_000;
        if gained > 0 {
            self.reserve = (self.reserve + gained).min(self.per_sec);
            // Advance by the time the gained tokens stand for, keeping the remainder.
            let used =
                Duration::from_micros(gained.saturating_mul(1_000_000) / self.per_sec.max(1));
            self.refilled_at += used;
        }
        if self.reserve == self.per_sec {
            self.refilled_at = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of grpc-go's TestRetryThrottling: a scripted sequence of calls
    /// and retries, with the token count checked after each step.
    #[test]
    fn scripted_failures_drain_and_refill_the_budget_exactly() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.2, 2, t0);
        assert_eq!(b.milli_tokens(t0), 2000, "a full reserve of 2 tokens");

        // (step, calls made, retries wanted, expected retries granted, tokens after)
        let script: &[(&str, u32, u32, u32, u64)] = &[
            ("5 calls deposit 1 token", 5, 0, 0, 3000),
            ("one retry takes the deposit", 0, 1, 1, 2000),
            ("two retries empty the reserve", 0, 2, 2, 0),
            ("a third is refused", 0, 1, 0, 0),
            ("4 calls deposit 0.8: not enough", 4, 1, 0, 800),
            ("a 5th call makes a whole token", 1, 1, 1, 0),
        ];
        for (step, calls, wanted, granted, after) in script {
            for _ in 0..*calls {
                b.deposit();
            }
            let got = (0..*wanted).filter(|_| b.try_withdraw(t0)).count() as u32;
            assert_eq!(got, *granted, "{step}: retries granted");
            assert_eq!(b.milli_tokens(t0), *after, "{step}: tokens after");
        }

        // Time refills the reserve at 2 tokens/s, never above 2.
        assert_eq!(b.milli_tokens(t0 + Duration::from_millis(250)), 500);
        assert_eq!(b.milli_tokens(t0 + Duration::from_millis(500)), 1000);
        assert!(b.try_withdraw(t0 + Duration::from_millis(500)));
        assert_eq!(b.milli_tokens(t0 + Duration::from_millis(500)), 0);
        assert_eq!(
            b.milli_tokens(t0 + Duration::from_secs(60)),
            2000,
            "capped at one second's worth"
        );
    }

    #[test]
    fn deposits_are_capped_so_calm_spells_do_not_bank_a_storm() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.2, 10, t0);
        for _ in 0..100_000 {
            b.deposit();
        }
        assert_eq!(
            b.milli_tokens(t0),
            20_000,
            "10 deposited (capped) + 10 in reserve"
        );
    }

    #[test]
    fn a_storm_stays_within_ratio_of_calls_plus_rate() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.2, 10, t0);
        // 1000 calls per second for 5 s, every one wanting 3 retries.
        let (mut calls, mut retries) = (0u64, 0u64);
        for ms in 0..5000u64 {
            let now = t0 + Duration::from_millis(ms);
            b.deposit();
            calls += 1;
            for _ in 0..3 {
                if b.try_withdraw(now) {
                    retries += 1;
                }
            }
        }
        let bound = calls / 5 + 10 * 5 + 2 * 10;
        assert!(
            retries <= bound,
            "{retries} retries for {calls} calls exceeds {bound}"
        );
        assert!(
            retries >= calls / 5,
            "the budget grants its ratio: {retries}"
        );
    }
}
