//! Client-side adaptive throttling (Google SRE, "Handling Overload"): a
//! service that refuses most of what it is sent is sent less, by the client
//! itself, before any request leaves.
//!
//! Over a sliding window (in buckets) the throttle counts **requests** (every
//! attempt the client wanted to make, including those it refused locally)
//! and **accepts** (attempts the backend answered with anything but
//! `RESOURCE_EXHAUSTED` or `UNAVAILABLE`: those two say "overloaded" or "not
//! there", every other answer means the backend did the work). Each new
//! attempt is refused with probability
//!
//! ```text
//! p = max(0, (requests − K × accepts) / (requests + 1))
//! ```
//!
//! While the window holds fewer than `min_requests` requests every attempt is
//! made (calls in flight when a service is first called have no answers yet
//! to count). With every answer accepted, `p` is 0 until the backend refuses more than
//! `1 − 1/K` of the attempts; with none accepted, about one attempt per window
//! (plus one per `K` accepts) still goes through, so recovery is noticed.
//!
//! The probability is applied as a fractional credit rather than a coin flip:
//! each attempt adds `1 − p` to the credit (capped at 1), and an attempt is
//! made when the credit reaches 1, which spends it. Over any run of attempts
//! the number made is at most the sum of their `1 − p`, exactly, not only on
//! average.
//!
//! Time is passed in explicitly (`now`), so tests script it exactly.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tonic::Code;

/// Whether an attempt answered with `code` counts as accepted by the backend:
/// anything but `RESOURCE_EXHAUSTED` and `UNAVAILABLE`.
pub(crate) fn accepted(code: Code) -> bool {
    !matches!(code, Code::ResourceExhausted | Code::Unavailable)
}

/// The adaptive throttle of one service; shared by its calls, each decision
/// a few arithmetic steps under a lock never held across an `.await`.
#[derive(Debug)]
pub struct AdaptiveThrottle {
    k: f64,
    min_requests: u64,
    /// The length of one bucket.
    bucket: Duration,
    epoch: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// `(requests, accepts)` per bucket; bucket `n` (since `epoch`) is at `n % len`.
    buckets: Box<[(u64, u64)]>,
    /// The newest bucket written.
    newest: u64,
    credit: f64,
}

impl AdaptiveThrottle {
    /// A throttle refusing with factor `k` (at least 1) over `window`, kept
    /// in `buckets` buckets (at least 1), once the window holds
    /// `min_requests`; starting empty at `now`.
    pub fn new(k: f64, window: Duration, buckets: u32, min_requests: u64, now: Instant) -> Self {
        let buckets = buckets.max(1);
        Self {
            k: k.max(1.0),
            min_requests,
            bucket: (window / buckets).max(Duration::from_millis(1)),
            epoch: now,
            state: Mutex::new(State {
                buckets: vec![(0, 0); buckets as usize].into(),
                newest: 0,
                credit: 0.0,
            }),
        }
    }

    /// Decides an attempt at `now`: `true` when it may be made. Either way it
    /// counts as a request.
    pub fn admit(&self, now: Instant) -> bool {
        let mut state = self.state.lock();
        let slot = self.advance(&mut state, now);
        let (requests, accepts) = state.totals();
        state.buckets[slot].0 += 1;
        if requests < self.min_requests {
            return true;
        }
        let refuse =
            ((requests as f64 - self.k * accepts as f64) / (requests as f64 + 1.0)).clamp(0.0, 1.0);
        state.credit = (state.credit + (1.0 - refuse)).min(1.0);
        let admitted = state.credit >= 1.0;
        if admitted {
            state.credit -= 1.0;
        }
        admitted
    }

    /// Records the answer to an attempt made at or before `now`.
    pub fn answered(&self, code: Code, now: Instant) {
        if accepted(code) {
            let mut state = self.state.lock();
            let slot = self.advance(&mut state, now);
            state.buckets[slot].1 += 1;
        }
    }

    /// The requests and accepts in the window ending at `now`.
    pub fn counts(&self, now: Instant) -> (u64, u64) {
        let mut state = self.state.lock();
        self.advance(&mut state, now);
        state.totals()
    }

    /// Clears the buckets that fell out of the window by `now`; answers the
    /// slot of `now`'s bucket. A `now` before the newest bucket (another call
    /// was first) writes to the newest.
    fn advance(&self, state: &mut State, now: Instant) -> usize {
        let len = state.buckets.len() as u64;
        let n = (now.saturating_duration_since(self.epoch).as_nanos()
            / self.bucket.as_nanos().max(1)) as u64;
        if n > state.newest {
            for stale in (state.newest + 1)..=n.min(state.newest + len) {
                state.buckets[(stale % len) as usize] = (0, 0);
            }
            state.newest = n;
        }
        (state.newest % len) as usize
    }
}

impl State {
    fn totals(&self) -> (u64, u64) {
        self.buckets
            .iter()
            .fold((0, 0), |(r, a), (br, ba)| (r + br, a + ba))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_healthy_service_is_never_throttled() {
        let t0 = Instant::now();
        let t = AdaptiveThrottle::new(2.0, 10 * SEC, 10, 0, t0);
        for i in 0..1000u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 30);
            assert!(t.admit(now), "attempt {i} refused");
            t.answered(Code::Ok, now);
        }
    }

    #[test]
    fn refusals_below_one_in_k_are_not_throttled() {
        let t0 = Instant::now();
        let t = AdaptiveThrottle::new(2.0, 10 * SEC, 10, 0, t0);
        // Every other attempt refused: requests = 2 × accepts, so p stays 0.
        for i in 0..1000u32 {
            assert!(t.admit(t0), "attempt {i} refused");
            let code = if i % 2 == 0 {
                Code::Ok
            } else {
                Code::Unavailable
            };
            t.answered(code, t0);
        }
    }

    /// The exact bound: with nothing accepted, attempt `i` (0-based) of a full
    /// window is made with weight `1/(i + 1)`, so `n` attempts make at most
    /// `floor(H(n))`.
    #[test]
    fn a_refusing_service_gets_the_formula_s_share_exactly() {
        let t0 = Instant::now();
        let t = AdaptiveThrottle::new(2.0, 60 * SEC, 6, 0, t0);
        let mut made = 0u32;
        let mut share = 0.0f64;
        for i in 0..10_000u32 {
            share += 1.0 / f64::from(i + 1);
            if t.admit(t0) {
                made += 1;
                t.answered(Code::ResourceExhausted, t0);
            }
            assert!(
                f64::from(made) <= share + 1e-9,
                "{made} made after {} > {share}",
                i + 1
            );
        }
        assert_eq!(made, share.floor() as u32, "H(10000) = {share}");
        assert_eq!(t.counts(t0), (10_000, 0));
    }

    #[test]
    fn accepts_buy_k_attempts_each() {
        let t0 = Instant::now();
        let t = AdaptiveThrottle::new(2.0, 60 * SEC, 6, 0, t0);
        // 100 accepted, then a backend refusing everything.
        for _ in 0..100 {
            assert!(t.admit(t0));
            t.answered(Code::Ok, t0);
        }
        let made = (0..1000)
            .filter(|_| {
                let ok = t.admit(t0);
                if ok {
                    t.answered(Code::ResourceExhausted, t0);
                }
                ok
            })
            .count();
        // 100 more requests are free (requests ≤ K × accepts), then each
        // request i (of the 1100) weighs (1 + 200)/(i + 1).
        let bound: f64 = 100.0
            + (200..1100u32)
                .map(|i| 201.0 / f64::from(i + 1))
                .sum::<f64>();
        assert!(made as f64 <= bound + 1e-9, "{made} > {bound}");
        assert!(made >= 100, "the accepts' share is granted: {made}");
    }

    #[test]
    fn the_window_slides_and_forgets() {
        let t0 = Instant::now();
        let t = AdaptiveThrottle::new(2.0, 10 * SEC, 10, 0, t0);
        for _ in 0..100 {
            if t.admit(t0) {
                t.answered(Code::Unavailable, t0);
            }
        }
        assert_eq!(t.counts(t0), (100, 0));
        assert!(!t.admit(t0 + SEC), "still throttled within the window");
        assert_eq!(t.counts(t0 + 10 * SEC), (1, 0), "the first bucket left");
        assert_eq!(t.counts(t0 + 30 * SEC), (0, 0));
        assert!(t.admit(t0 + 30 * SEC), "an empty window admits");
    }

    #[test]
    fn below_min_requests_every_attempt_is_made() {
        let t0 = Instant::now();
        let t = AdaptiveThrottle::new(2.0, 10 * SEC, 10, 5, t0);
        assert!((0..5).all(|_| t.admit(t0)), "the first 5 go through");
        // The 6th weighs 1/6: refused; the credit reaches 1 at the 8th
        // (1/6 + 1/7 + 1/8 < 1), so not before the 9th or later.
        assert!(!t.admit(t0));
        assert!(!t.admit(t0));
        assert!(!t.admit(t0));
    }

    #[test]
    fn a_late_clock_reading_writes_to_the_newest_bucket() {
        let t0 = Instant::now();
        let t = AdaptiveThrottle::new(2.0, 10 * SEC, 10, 5, t0);
        assert!(t.admit(t0 + 5 * SEC));
        assert!(t.admit(t0));
        assert_eq!(t.counts(t0 + 5 * SEC), (2, 0));
    }
}
