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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const MILLI: u64 = 1000;

/// The retry budget of one service: every extra attempt of a call (a failover
/// or failretry retry, an extra fork) takes a token; every call adds a share.
///
/// Shared by every call of the service without a lock: both pools are atomics
/// updated by compare-and-swap.
#[derive(Debug)]
pub struct RetryBudget {
    /// Milli-tokens deposited per call.
    per_call: u64,
    /// Milli-tokens the reserve gains per second, and its cap.
    per_sec: u64,
    /// Cap of the deposit pool, in milli-tokens.
    deposit_cap: u64,
    deposits: AtomicU64,
    /// The reserve (high 32 bits, milli-tokens, capped at `u32::MAX`) and when
    /// it was last refilled (low 32 bits, milliseconds since `epoch`, wrapping).
    reserve: AtomicU64,
    epoch: Instant,
}

impl RetryBudget {
    /// A budget of `ratio` (0.0..=1.0) of the calls plus `min_per_sec` per second,
    /// starting with a full reserve at `now`.
    pub fn new(ratio: f64, min_per_sec: u32, now: Instant) -> Self {
        let per_call = (ratio.clamp(0.0, 1.0) * MILLI as f64).round() as u64;
        let per_sec = (u64::from(min_per_sec) * MILLI).min(u64::from(u32::MAX));
        Self {
            per_call,
            per_sec,
            deposit_cap: per_sec.max(MILLI),
            deposits: AtomicU64::new(0),
            reserve: AtomicU64::new(pack(per_sec, 0)),
            epoch: now,
        }
    }

    /// Records one call (a first attempt).
    pub fn deposit(&self) {
        let (per_call, cap) = (self.per_call, self.deposit_cap);
        let _ = self
            .deposits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                (d < cap).then(|| (d + per_call).min(cap))
            });
    }

    /// Takes one token for an extra attempt at `now`; `false` when the budget is
    /// spent and the attempt must not be made.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let from_deposits = self
            .deposits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                (d >= MILLI).then(|| d - MILLI)
            });
        if from_deposits.is_ok() {
            return true;
        }
        let now = self.millis(now);
        self.reserve
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |packed| {
                let (reserve, at) = self.refilled(packed, now);
                (reserve >= MILLI).then(|| pack(reserve - MILLI, at))
            })
            .is_ok()
    }

    /// The tokens available at `now` (deposits + reserve), in thousandths.
    pub fn milli_tokens(&self, now: Instant) -> u64 {
        let (reserve, _) = self.refilled(self.reserve.load(Ordering::Acquire), self.millis(now));
        self.deposits.load(Ordering::Acquire) + reserve
    }

    /// Milliseconds from the budget's start to `now`, wrapping at 32 bits (49
    /// days): only differences matter, and only up to a second's refill.
    fn millis(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_millis() as u32
    }

    /// The reserve of `packed` refilled up to `now`, and the refill time to
    /// keep: advanced by the time the gained tokens stand for, keeping the
    /// remainder; `now` once full.
    fn refilled(&self, packed: u64, now: u32) -> (u64, u32) {
        let (reserve, at) = unpack(packed);
        // Negative when another call refilled with a later `now` first.
        let elapsed = u64::try_from(now.wrapping_sub(at) as i32).unwrap_or(0);
        let gained = elapsed.saturating_mul(self.per_sec) / 1000;
        let mut reserve = reserve;
        let mut at = at;
        if gained > 0 {
            reserve = (reserve + gained).min(self.per_sec);
            let used = gained * 1000 / self.per_sec.max(1);
            at = at.wrapping_add(used as u32);
        }
        if reserve == self.per_sec {
            at = now;
        }
        (reserve, at)
    }
}

fn pack(reserve: u64, at: u32) -> u64 {
    (reserve << 32) | u64::from(at)
}

fn unpack(packed: u64) -> (u64, u32) {
    (packed >> 32, packed as u32)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The shape of grpc-go's TestRetryThrottling: a scripted sequence of calls
    /// and retries, with the token count checked after each step.
    #[test]
    fn scripted_failures_drain_and_refill_the_budget_exactly() {
        let t0 = Instant::now();
        let b = RetryBudget::new(0.2, 2, t0);
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
        let b = RetryBudget::new(0.2, 10, t0);
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
        let b = RetryBudget::new(0.2, 10, t0);
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
