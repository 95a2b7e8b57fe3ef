//! The in-flight limit, computed from completed calls: pure logic on the
//! instants it is given, so tests drive it with made-up times.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ShedConfig;

/// Calls completed in one bucket, and their summed latency.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    passed: u64,
    latency: Duration,
}

impl Bucket {
    /// The mean latency of its calls; `None` without any.
    fn mean(&self) -> Option<Duration> {
        let n = u32::try_from(self.passed).unwrap_or(u32::MAX);
        (n > 0).then(|| self.latency / n)
    }
}

/// Measures throughput and latency over a sliding window of buckets and
/// derives the in-flight limit from them when a bucket ends.
#[derive(Debug)]
pub(crate) struct Estimate {
    bucket: Duration,
    /// Completed buckets kept: the window's bucket count.
    keep: usize,
    min_in_flight: usize,
    headroom_percent: u32,
    min_rtt_window: Duration,
    /// When the current bucket started.
    start: Instant,
    current: Bucket,
    /// Completed buckets, oldest first.
    history: VecDeque<Bucket>,
    /// The least mean latency of a bucket, and when it was seen.
    min_rtt: Option<(Duration, Instant)>,
    limit: usize,
}

impl Estimate {
    /// A fresh estimate whose first bucket starts at `now`; its limit is
    /// `min_in_flight` until a bucket with completed calls has ended.
    pub(crate) fn new(config: &ShedConfig, now: Instant) -> Self {
        let min_in_flight = usize::try_from(config.min_in_flight()).unwrap_or(usize::MAX);
        Self {
            bucket: config.bucket().max(Duration::from_millis(1)),
            keep: usize::try_from(config.buckets().max(1)).unwrap_or(1),
            min_in_flight,
            headroom_percent: config.headroom_percent(),
            min_rtt_window: config.min_rtt_window(),
            start: now,
            current: Bucket::default(),
            history: VecDeque::new(),
            min_rtt: None,
            limit: min_in_flight,
        }
    }

    /// The in-flight limit in force.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The least latency kept, if any call completed yet.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|(rtt, _)| rtt)
    }

    /// Counts a call that completed at `now` after `latency`; returns the limit
    /// in force afterwards.
    pub(crate) fn record(&mut self, now: Instant, latency: Duration) -> usize {
        self.roll(now);
        self.current.passed += 1;
        self.current.latency = self.current.latency.saturating_add(latency);
        self.limit
    }

    /// Ends every bucket that is over at `now`, then recomputes the limit if
    /// any ended.
    pub(crate) fn roll(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.start) else {
            return;
        };
        if elapsed < self.bucket {
            return;
        }
        let ended = elapsed.as_nanos() / self.bucket.as_nanos();
        let ended = usize::try_from(ended).unwrap_or(usize::MAX);
        self.history.push_back(std::mem::take(&mut self.current));
        // Buckets that passed without a call are empty ones.
        for _ in 1..ended.min(self.keep) {
            self.history.push_back(Bucket::default());
        }
        while self.history.len() > self.keep {
            self.history.pop_front();
        }
        let ended = u32::try_from(ended).unwrap_or(u32::MAX);
        self.start = match self.bucket.checked_mul(ended) {
            Some(span) => self.start + span,
            None => now,
        };
        self.recompute(now);
    }

    /// limit = max(min_in_flight, ⌈(1 + headroom) × most calls completed in a
    /// bucket / bucket length × least mean latency⌉). A window without
    /// completed calls keeps the limit: idleness says nothing about capacity.
    fn recompute(&mut self, now: Instant) {
        let window_min = self.history.iter().filter_map(Bucket::mean).min();
        let Some(window_min) = window_min else {
            return;
        };
        // A window at or under the kept latency renews it; a higher one
        // replaces it only once it is older than min_rtt_window.
        self.min_rtt = match self.min_rtt {
            Some((kept, at))
                if kept < window_min && now.saturating_duration_since(at) < self.min_rtt_window =>
            {
                Some((kept, at))
            }
            _ => Some((window_min, now)),
        };
        let max_passed = self.history.iter().map(|b| b.passed).max().unwrap_or(0);
        let rtt = self.min_rtt().unwrap_or(window_min);
        // calls in flight = rate × latency = passed × rtt / bucket.
        let in_flight = max_passed as f64 * rtt.as_secs_f64() / self.bucket.as_secs_f64();
        let limit = (in_flight * (100.0 + f64::from(self.headroom_percent)) / 100.0).ceil();
        // A float to integer `as` saturates; the value is finite and non-negative.
        self.limit = (limit as usize).max(self.min_in_flight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ShedConfig {
        ShedConfig::default()
            .with_enabled(true)
            .with_window(Duration::from_secs(1))
            .with_buckets(10)
            .with_min_in_flight(2)
            .with_headroom_percent(50)
            .with_min_rtt_window(Duration::from_secs(10))
    }

    const MS: Duration = Duration::from_millis(1);

    /// Completes `n` calls of `latency` spread over the bucket starting at `at`.
    fn fill(e: &mut Estimate, at: Instant, n: u32, latency: Duration) {
        for i in 0..n {
            e.record(at + 100 * MS * i / n, latency);
        }
    }

    #[test]
    fn the_limit_is_min_in_flight_until_a_bucket_with_calls_ends() {
        let t0 = Instant::now();
        let mut e = Estimate::new(&config(), t0);
        assert_eq!(e.limit(), 2);
        fill(&mut e, t0, 50, 10 * MS);
        assert_eq!(e.limit(), 2, "the first bucket has not ended");
        e.roll(t0 + 100 * MS);
        // 50 calls in 100 ms at 10 ms: 5 in flight, × 1.5 = 7.5 → 8.
        assert_eq!(e.limit(), 8);
        assert_eq!(e.min_rtt(), Some(10 * MS));
    }

    #[test]
    fn the_limit_is_the_busiest_bucket_times_the_least_latency_with_headroom() {
        let t0 = Instant::now();
        let mut e = Estimate::new(&config(), t0);
        fill(&mut e, t0, 40, 20 * MS); // 40 calls, mean 20 ms
        fill(&mut e, t0 + 100 * MS, 100, 30 * MS); // busiest, slower
        e.roll(t0 + 200 * MS);
        // 100 calls / 100 ms × 20 ms = 20 in flight, × 1.5 = 30.
        assert_eq!(e.limit(), 30);
    }

    #[test]
    fn a_queueing_server_converges_to_its_capacity_with_headroom() {
        // A server running 4 calls at once, 40 ms each (100 calls/s): with L
        // admitted, its latency is 40 ms × max(1, L / 4) and it completes
        // min(L, 4) calls per 40 ms.
        let t0 = Instant::now();
        let mut e = Estimate::new(&config().with_min_in_flight(1), t0);
        let mut limit = e.limit();
        for bucket in 0..100u32 {
            let start = t0 + 100 * MS * bucket;
            let latency = 40 * MS * u32::try_from(limit.max(4)).unwrap_or(u32::MAX) / 4;
            let passed = u32::try_from(limit.min(4)).unwrap_or(4) * 100 / 40;
            fill(&mut e, start, passed, latency);
            e.roll(start + 100 * MS);
            limit = e.limit();
        }
        // 10 calls per 100 ms × 40 ms = 4 in flight, × 1.5 = 6.
        assert_eq!(limit, 6);
    }

    #[test]
    fn the_least_latency_is_kept_for_min_rtt_window_then_replaced() {
        let t0 = Instant::now();
        let mut e = Estimate::new(&config(), t0);
        fill(&mut e, t0, 10, 10 * MS);
        e.roll(t0 + 100 * MS);
        assert_eq!(e.min_rtt(), Some(10 * MS));
        // Slower calls for 5 s: the 10 ms floor is kept.
        for b in 1..50u32 {
            fill(&mut e, t0 + 100 * MS * b, 10, 50 * MS);
        }
        e.roll(t0 + 5000 * MS);
        assert_eq!(e.min_rtt(), Some(10 * MS), "within min_rtt_window");
        for b in 50..120u32 {
            fill(&mut e, t0 + 100 * MS * b, 10, 50 * MS);
        }
        e.roll(t0 + 12_000 * MS);
        assert_eq!(e.min_rtt(), Some(50 * MS), "after min_rtt_window");
    }

    #[test]
    fn an_idle_window_keeps_the_limit_and_a_long_gap_empties_the_window() {
        let t0 = Instant::now();
        let mut e = Estimate::new(&config(), t0);
        fill(&mut e, t0, 100, 10 * MS);
        e.roll(t0 + 100 * MS);
        assert_eq!(e.limit(), 15);
        e.roll(t0 + 60_000 * MS);
        assert_eq!(e.limit(), 15, "idle: no evidence of a lower capacity");
        fill(&mut e, t0 + 60_000 * MS, 20, 10 * MS);
        e.roll(t0 + 60_100 * MS);
        // The busy bucket left the window: 20 calls × 10 ms / 100 ms × 1.5 = 3.
        assert_eq!(e.limit(), 3);
    }

    #[test]
    fn a_time_before_the_bucket_start_changes_nothing() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut e = Estimate::new(&config(), t0);
        e.record(t0 - MS, 5 * MS);
        e.roll(t0 - 10 * MS);
        assert_eq!(e.limit(), 2);
        assert_eq!(e.min_rtt(), None);
    }
}
