//! The `[server.shedding]` table: adaptive load shedding (see [`crate::shedding`]).

use std::time::Duration;

use registry_actor::config::duration;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The `[server.shedding]` table: an in-flight limit derived from the
/// measured throughput × the least latency over a sliding window; calls above
/// it are answered `RESOURCE_EXHAUSTED` with a pushback. Off by default. See
/// [`crate::shedding`] for the rule. Read when the server starts: a reload of
/// the configuration files does not change it.
///
/// ```toml
/// [server.shedding]
/// enabled = true
/// window = "5s"          # throughput and latency are measured over this window
/// buckets = 10           # ... in this many buckets
/// min_in_flight = 8      # the limit is never below this
/// headroom_percent = 50  # limit = (1 + headroom) × throughput × least latency
/// min_rtt_window = "10s" # how long the least latency seen is kept
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShedConfig {
    enabled: bool,
    #[serde(with = "duration")]
    window: Duration,
    buckets: u32,
    min_in_flight: u32,
    headroom_percent: u32,
    #[serde(with = "duration")]
    min_rtt_window: Duration,
}

impl Default for ShedConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            window: Duration::from_secs(5),
            buckets: 10,
            min_in_flight: 8,
            headroom_percent: 50,
            min_rtt_window: Duration::from_secs(10),
        }
    }
}

impl ShedConfig {
    /// Turns shedding on or off (`enabled`, default off).
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The sliding window throughput and latency are measured over (`window`,
    /// default 5 s).
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The buckets the window is cut into (`buckets`, default 10); the limit
    /// is recomputed whenever a bucket ends.
    pub fn with_buckets(mut self, buckets: u32) -> Self {
        self.buckets = buckets;
        self
    }

    /// The least in-flight limit (`min_in_flight`, default 8): calls up to
    /// this many at once are never shed.
    pub fn with_min_in_flight(mut self, min: u32) -> Self {
        self.min_in_flight = min;
        self
    }

    /// How far above the measured throughput × least latency the limit is, in
    /// percent (`headroom_percent`, default 50): admitted calls queue for at
    /// most about this share of the least latency.
    pub fn with_headroom_percent(mut self, percent: u32) -> Self {
        self.headroom_percent = percent;
        self
    }

    /// How long the least latency seen is kept before a higher one of the
    /// current window replaces it (`min_rtt_window`, default 10 s).
    pub fn with_min_rtt_window(mut self, window: Duration) -> Self {
        self.min_rtt_window = window;
        self
    }

    /// Whether shedding is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The measuring window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The buckets of the window.
    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    /// The least in-flight limit.
    pub fn min_in_flight(&self) -> u32 {
        self.min_in_flight
    }

    /// The headroom above throughput × least latency, in percent.
    pub fn headroom_percent(&self) -> u32 {
        self.headroom_percent
    }

    /// How long the least latency is kept.
    pub fn min_rtt_window(&self) -> Duration {
        self.min_rtt_window
    }

    /// The length of one bucket: `window / buckets`.
    pub fn bucket(&self) -> Duration {
        self.window / self.buckets.max(1)
    }

    /// Checks every value; the error names the key (`server.shedding.…`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for `buckets` outside 1..=1000, a bucket
    /// (`window / buckets`) under 1 ms, a `min_in_flight` of 0, a
    /// `headroom_percent` above 1000, a zero `min_rtt_window`, or a duration
    /// above 365 days.
    pub fn validate(&self) -> Result<(), Error> {
        const KEY: &str = "server.shedding";
        let bad = |key: &str, why: String| Err(Error::invalid(format!("{KEY}.{key}"), why));
        if !(1..=1000).contains(&self.buckets) {
            return bad("buckets", format!("{} is not in 1..=1000", self.buckets));
        }
        for (key, value) in [
            ("window", self.window),
            ("min_rtt_window", self.min_rtt_window),
        ] {
            duration::check_bound(value)
                .map_err(|why| Error::invalid(format!("{KEY}.{key}"), why))?;
        }
        if self.bucket() < Duration::from_millis(1) {
            return bad(
                "window",
                format!(
                    "{:?} over {} buckets is under 1 ms a bucket",
                    self.window, self.buckets
                ),
            );
        }
        if self.min_in_flight == 0 {
            return bad("min_in_flight", "must be at least 1".into());
        }
        if self.headroom_percent > 1000 {
            return bad(
                "headroom_percent",
                format!("{} is above 1000", self.headroom_percent),
            );
        }
        if self.min_rtt_window.is_zero() {
            return bad("min_rtt_window", "must be above zero".into());
        }
        Ok(())
    }
}
