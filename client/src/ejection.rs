//! Ejection: taking a node out of picking after consecutive failures.
//!
//! A node's connections report its failures: a connection that cannot be made
//! or breaks, an attempt that outlives its attempt timeout, and an answer with
//! one of the ejection `codes` (`UNAVAILABLE` by default); any other answer is
//! a success. A node with
//! `failures` consecutive failures is ejected for a backoff that starts at
//! `base_time` and doubles with each ejection up to `max_time` (with jitter, see
//! [`Backoff`]); when the time is up it comes back with a clean failure count. A
//! node that then stays in for `max_time` without being ejected again starts over
//! from `base_time`. A success resets the failure count.
//!
//! Ejection never takes out more than `max_share` of a service's nodes: a node
//! that reaches its threshold while the cap is full stays in, and is ejected at its
//! next failure if room has been made by then.
//!
//! Optionally, nodes are also compared with each other: every interval, a
//! node whose share of successful attempts is far below the others' (more
//! than `stdev_factor` standard deviations under the mean, among the nodes
//! with enough attempts; see [`success_rate_outliers`]) is ejected the same
//! way, under the same cap.
//!
//! Beside ejection, a node is out of picking while its retry pushback lasts,
//! while its server's health service says it does not serve (with
//! `health_check`), and from its server's GOAWAY until a fresh connection
//! works; none of these counts as a failure nor against the cap.

#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use registry_actor::Backoff;

use crate::config::EjectionConfig;

/// The health of one node as its connection attempts show it.
#[derive(Debug, Clone)]
pub(crate) struct NodeHealth {
    consecutive: u32,
    ejections: u32,
    backoff: Backoff,
    ejected_until: Option<Instant>,
    returned_at: Option<Instant>,
    /// Until when the node asked (by a retry pushback) not to be called.
    paused_until: Option<Instant>,
    /// Whether its server's health service says it does not serve.
    unhealthy: bool,
    /// Whether its server is closing a connection to it (GOAWAY), and no
    /// fresh connection has worked since.
    going_away: bool,
}

impl NodeHealth {
    pub(crate) fn new(policy: &EjectionConfig) -> Self {
        Self {
            consecutive: 0,
            ejections: 0,
            backoff: Backoff::new(policy.base_time(), policy.max_time()),
            ejected_until: None,
            returned_at: None,
            paused_until: None,
            unhealthy: false,
            going_away: false,
        }
    }

    /// Whether the node is ejected now.
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }

    /// Until when the node is ejected.
    pub(crate) fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// Consecutive failures since the last success or return.
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// How many times the node was ejected.
    pub(crate) fn ejections(&self) -> u32 {
        self.ejections
    }

    /// Counts a failed connection attempt; answers whether the node has reached
    /// the threshold and should be ejected (if the share cap allows).
    pub(crate) fn record_failure(&mut self, policy: &EjectionConfig) -> bool {
        self.consecutive = self.consecutive.saturating_add(1);
        !self.is_ejected() && self.consecutive >= policy.failures()
    }

    /// Counts a successful connection attempt.
    pub(crate) fn record_success(&mut self) {
        if !self.is_ejected() {
            self.consecutive = 0;
        }
    }

    /// Ejects the node from `now`; answers until when.
    pub(crate) fn eject(&mut self, policy: &EjectionConfig, now: Instant) -> Instant {
        if self
            .returned_at
            .is_some_and(|at| now.saturating_duration_since(at) >= policy.max_time())
        {
            self.backoff.reset();
        }
        let until = now + self.backoff.next_delay();
        self.ejected_until = Some(until);
        self.ejections = self.ejections.saturating_add(1);
        until
    }

    /// Brings the node back when its time is up; answers whether it came back.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(until) if until <= now => {
                self.ejected_until = None;
                self.consecutive = 0;
                self.returned_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Keeps the node out of picking until `until`, as its retry pushback
    /// asked (no failure is counted); answers whether it was pickable before.
    pub(crate) fn pause(&mut self, until: Instant) -> bool {
        let was_in = !self.is_out();
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
        was_in
    }

    /// Whether the node is paused by a pushback now.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// Until when the node is paused.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Ends the pause when its time is up; answers whether it ended.
    pub(crate) fn expire_pause(&mut self, now: Instant) -> bool {
        match self.paused_until {
            Some(until) if until <= now => {
                self.paused_until = None;
                true
            }
            _ => false,
        }
    }

    /// Records what the node's health service says: a node that does not
    /// serve is out of picking until it says it serves again (no failure is
    /// counted, no time limit). Answers whether that changed what was known.
    pub(crate) fn set_serving(&mut self, serving: bool) -> bool {
        let changed = self.unhealthy == serving;
        self.unhealthy = !serving;
        changed
    }

    /// Whether the node's health service says it does not serve.
    pub(crate) fn is_unhealthy(&self) -> bool {
        self.unhealthy
    }

    /// Records that the node's server is closing a connection to it (a
    /// GOAWAY, or the connection ended), or (`false`) that a fresh connection
    /// to it works: the node is out of picking in between (no failure is
    /// counted, no time limit). Answers whether that changed what was known.
    pub(crate) fn set_going_away(&mut self, going: bool) -> bool {
        let changed = self.going_away != going;
        self.going_away = going;
        changed
    }

    /// Whether the node's server is closing its connection and no fresh
    /// connection has worked since.
    pub(crate) fn is_going_away(&self) -> bool {
        self.going_away
    }

    /// Whether the node may not be picked: ejected, paused, unhealthy, or
    /// going away.
    pub(crate) fn is_out(&self) -> bool {
        self.is_ejected() || self.is_paused() || self.unhealthy || self.going_away
    }

    /// The nominal length of the next ejection (before jitter).
    #[cfg(test)]
    pub(crate) fn next_nominal(&self) -> Duration {
        self.backoff.nominal()
    }
}

/// Success-rate outliers (as Envoy's outlier detection): `samples` holds
/// each node's (successes, failures) over one interval. Among the nodes with
/// at least `min_requests` attempts — when there are at least `min_nodes` of
/// them — answers the indices of those whose success rate is below the mean
/// rate by more than `stdev_factor` (population) standard deviations.
pub(crate) fn success_rate_outliers(
    samples: &[(u64, u64)],
    stdev_factor: f64,
    min_requests: u64,
    min_nodes: usize,
) -> Vec<usize> {
    let rates: Vec<(usize, f64)> = samples
        .iter()
        .enumerate()
        .filter_map(|(i, &(ok, failed))| {
            let total = ok.saturating_add(failed);
            (total >= min_requests.max(1)).then(|| (i, ok as f64 / total as f64))
        })
        .collect();
    if rates.len() < min_nodes.max(2) {
        return Vec::new();
    }
    let n = rates.len() as f64;
    let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
    // Below the mean by more than the allowed deviation, beyond rounding
    // (equal rates are never outliers).
    let allowed = stdev_factor * variance.sqrt() + 1e-9;
    rates
        .into_iter()
        .filter(|&(_, rate)| mean - rate > allowed)
        .map(|(i, _)| i)
        .collect()
}

/// The most nodes that may be ejected at once out of `nodes`.
pub(crate) fn max_ejected(nodes: usize, max_share: f64) -> usize {
    let cap = (nodes as f64 * max_share.clamp(0.0, 1.0)).floor();
    (cap as usize).min(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(failures: u32, base_ms: u64, max_ms: u64) -> EjectionConfig {
        EjectionConfig::default()
            .with_failures(failures)
            .with_base_time(Duration::from_millis(base_ms))
            .with_max_time(Duration::from_millis(max_ms))
    }

    #[test]
    fn ejects_after_n_failures_and_returns_after_the_backoff() {
        let p = policy(3, 1_000, 60_000);
        let mut h = NodeHealth::new(&p);
        let t0 = Instant::now();
        assert!(!h.record_failure(&p));
        assert!(!h.record_failure(&p));
        assert!(
            h.record_failure(&p),
            "third consecutive failure reaches the threshold"
        );
        let until = h.eject(&p, t0);
        assert!(h.is_ejected());
        // Equal jitter: the wait is within [base/2, base].
        assert!(until >= t0 + Duration::from_millis(500) && until <= t0 + Duration::from_secs(1));
        assert!(
            !h.expire(t0 + Duration::from_millis(499)),
            "not back before half the base time"
        );
        assert!(
            h.expire(t0 + Duration::from_secs(1)),
            "back after the base time"
        );
        assert!(!h.is_ejected());
        assert_eq!(h.consecutive_failures(), 0);
    }

    #[test]
    fn a_pause_takes_the_node_out_without_counting_a_failure_and_ends_on_time() {
        let p = policy(1, 1_000, 60_000);
        let mut h = NodeHealth::new(&p);
        let t0 = Instant::now();
        assert!(h.pause(t0 + Duration::from_millis(300)), "was pickable");
        assert!(!h.pause(t0 + Duration::from_millis(100)), "already out");
        assert!(h.is_out() && !h.is_ejected());
        assert_eq!(h.consecutive_failures(), 0);
        assert_eq!(
            h.paused_until(),
            Some(t0 + Duration::from_millis(300)),
            "the longer pause kept"
        );
        assert!(!h.expire_pause(t0 + Duration::from_millis(299)));
        assert!(h.expire_pause(t0 + Duration::from_millis(300)));
        assert!(!h.is_out());
    }

    #[test]
    fn an_unhealthy_node_is_out_until_it_serves_again_without_counting_a_failure() {
        let p = policy(1, 1_000, 60_000);
        let mut h = NodeHealth::new(&p);
        assert!(!h.set_serving(true), "already serving");
        assert!(h.set_serving(false), "taken out");
        assert!(!h.set_serving(false), "already out");
        assert!(h.is_out() && h.is_unhealthy() && !h.is_ejected());
        assert_eq!(h.consecutive_failures(), 0);
        assert!(h.set_serving(true), "back");
        assert!(!h.is_out());

        // Paused as well: serving again does not bring it back before the
        // pause ends.
        let t0 = Instant::now();
        assert!(h.set_serving(false));
        assert!(!h.pause(t0 + Duration::from_millis(300)), "already out");
        assert!(h.set_serving(true));
        assert!(h.is_out(), "still paused");
        assert!(h.expire_pause(t0 + Duration::from_millis(300)));
        assert!(!h.is_out());
    }

    #[test]
    fn a_node_going_away_is_out_until_a_fresh_connection_works() {
        let p = policy(1, 1_000, 60_000);
        let mut h = NodeHealth::new(&p);
        assert!(h.set_going_away(true), "taken out");
        assert!(!h.set_going_away(true), "already out");
        assert!(h.is_out() && h.is_going_away() && !h.is_ejected());
        assert_eq!(h.consecutive_failures(), 0);
        assert!(h.set_serving(false));
        assert!(h.set_going_away(false));
        assert!(h.is_out(), "still unhealthy");
        assert!(h.set_serving(true));
        assert!(!h.is_out(), "back");
    }

    #[test]
    fn a_success_resets_the_count() {
        let p = policy(2, 1_000, 60_000);
        let mut h = NodeHealth::new(&p);
        assert!(!h.record_failure(&p));
        h.record_success();
        assert!(!h.record_failure(&p), "count restarted after the success");
        assert!(h.record_failure(&p));
    }

    #[test]
    fn backoff_starts_over_after_max_time_in() {
        let p = policy(1, 1_000, 8_000);
        let mut h = NodeHealth::new(&p);
        let mut now = Instant::now();
        for _ in 0..3 {
            assert!(h.record_failure(&p));
            now = h.eject(&p, now);
            assert!(h.expire(now));
        }
        assert_eq!(h.next_nominal(), Duration::from_secs(8));
        now += Duration::from_secs(8);
        assert!(h.record_failure(&p));
        let until = h.eject(&p, now);
        assert!(
            until <= now + Duration::from_secs(1),
            "back to the base time"
        );
    }

    #[test]
    fn a_node_far_below_the_others_success_rate_is_an_outlier() {
        // Four nodes at 100 %, one at 0 %: 2 deviations below the mean.
        let samples = [(100, 0), (100, 0), (0, 100), (100, 0), (100, 0)];
        assert_eq!(success_rate_outliers(&samples, 1.9, 100, 5), [2]);
        assert!(
            success_rate_outliers(&samples, 2.1, 100, 5).is_empty(),
            "within 2.1 deviations"
        );
        assert!(
            success_rate_outliers(&samples, 1.9, 101, 5).is_empty(),
            "too few requests to count"
        );
        assert!(
            success_rate_outliers(&samples[..4], 1.0, 100, 5).is_empty(),
            "too few nodes"
        );
        // Three nodes: a lone outlier is at most sqrt(2) deviations away.
        let three = [(50, 0), (0, 50), (50, 0)];
        assert!(success_rate_outliers(&three, 1.9, 10, 3).is_empty());
        assert_eq!(success_rate_outliers(&three, 1.0, 10, 3), [1]);
        // A node without enough requests is left out of the comparison.
        let quiet = [(50, 0), (0, 5), (50, 0), (48, 2)];
        assert_eq!(success_rate_outliers(&quiet, 0.1, 10, 3), [3]);
    }

    proptest! {
        #[test]
        fn equal_success_rates_have_no_outlier(
            nodes in 2usize..20, ok in 0u64..1000, failed in 0u64..1000, factor in 0.0f64..5.0,
        ) {
            let samples = vec![(ok, failed); nodes];
            prop_assert!(success_rate_outliers(&samples, factor, 1, 2).is_empty());
        }

        #[test]
        fn outliers_are_below_the_mean(
            samples in proptest::collection::vec((0u64..200, 0u64..200), 2..20),
            factor in 0.0f64..3.0,
        ) {
            let rate = |&(ok, failed): &(u64, u64)| ok as f64 / (ok + failed).max(1) as f64;
            let counted: Vec<f64> = samples.iter().filter(|(o, f)| o + f >= 1).map(rate).collect();
            let mean = counted.iter().sum::<f64>() / counted.len().max(1) as f64;
            for i in success_rate_outliers(&samples, factor, 1, 2) {
                prop_assert!(rate(&samples[i]) < mean);
            }
        }

        #[test]
        fn ejection_time_grows_with_each_ejection_up_to_the_cap(
            base_ms in 1u64..5_000, max_factor in 1u64..64, rounds in 1usize..12,
        ) {
            let max_ms = base_ms * max_factor;
            let p = policy(1, base_ms, max_ms);
            let mut h = NodeHealth::new(&p);
            let mut now = Instant::now();
            let mut last_nominal = Duration::ZERO;
            for _ in 0..rounds {
                let nominal = h.next_nominal();
                prop_assert!(nominal >= last_nominal);
                prop_assert!(nominal <= Duration::from_millis(max_ms));
                prop_assert!(h.record_failure(&p));
                let until = h.eject(&p, now);
                prop_assert!(until >= now + nominal / 2 && until <= now + nominal);
                prop_assert!(h.expire(until));
                // Come back and fail at once: no time to start over.
                now = until;
                last_nominal = nominal;
            }
        }

        #[test]
        fn the_cap_never_exceeds_the_share(nodes in 0usize..10_000, share in 0.0f64..=1.0) {
            let cap = max_ejected(nodes, share);
            prop_assert!(cap as f64 <= nodes as f64 * share + 1e-9);
            prop_assert!(cap <= nodes);
        }
    }
}
