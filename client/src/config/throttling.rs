//! The `throttling` table: [`ThrottlingConfig`].

use std::time::Duration;

use registry_actor::config::InvalidValue;
use serde::{Deserialize, Serialize};

use super::*;
use crate::Error;

const DEFAULT_K: f64 = 2.0;
const DEFAULT_WINDOW: Duration = Duration::from_secs(120);
const DEFAULT_BUCKETS: u32 = 24;
const DEFAULT_MIN_REQUESTS: u64 = 10;

/// The `throttling` table: client-side adaptive throttling (Google SRE), off
/// by default. Over a sliding `window` (kept in `buckets`) the client counts
/// the attempts it wanted to make (`requests`) and those the backend accepted
/// (answered with anything but `RESOURCE_EXHAUSTED` or `UNAVAILABLE`), and
/// refuses a new attempt locally with probability
/// `max(0, (requests − k × accepts) / (requests + 1))`, once the window holds
/// `min_requests`. A refused first attempt ends the call with `UNAVAILABLE`
/// and no attempt; a refused retry, hedge or fork ends the call as a spent
/// retry budget does. Unset keys take the next level's value, and in the end
/// the defaults below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottlingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) k: Option<f64>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) window: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) buckets: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) min_requests: Option<u64>,
}

impl ThrottlingConfig {
    /// Turns throttling on or off (default off).
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// The accepts multiplier `k` (default 2, at least 1): the backend may
    /// refuse up to `1 − 1/k` of the attempts before any is refused locally.
    pub fn with_k(mut self, k: f64) -> Self {
        self.k = Some(k);
        self
    }

    /// The window counted over (default 2 min), kept in `buckets` buckets
    /// (default 24, at least 1).
    pub fn with_window(mut self, window: Duration, buckets: u32) -> Self {
        self.window = Some(window);
        self.buckets = Some(buckets);
        self
    }

    /// Requests the window must hold before any is refused (default 10).
    pub fn with_min_requests(mut self, min_requests: u64) -> Self {
        self.min_requests = Some(min_requests);
        self
    }

    /// Whether throttling is on.
    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or(false)
    }

    /// The accepts multiplier.
    pub fn k(&self) -> f64 {
        self.k.unwrap_or(DEFAULT_K)
    }

    /// The window counted over.
    pub fn window(&self) -> Duration {
        self.window.unwrap_or(DEFAULT_WINDOW)
    }

    /// The buckets the window is kept in.
    pub fn buckets(&self) -> u32 {
        self.buckets.unwrap_or(DEFAULT_BUCKETS)
    }

    /// Requests the window must hold before any is refused.
    pub fn min_requests(&self) -> u64 {
        self.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS)
    }

    /// These keys over `base`: the ones set here win.
    pub fn merged_over(&self, base: &ThrottlingConfig) -> ThrottlingConfig {
        ThrottlingConfig {
            enabled: self.enabled.or(base.enabled),
            k: self.k.or(base.k),
            window: self.window.or(base.window),
            buckets: self.buckets.or(base.buckets),
            min_requests: self.min_requests.or(base.min_requests),
        }
    }

    /// The resolved settings, `None` when throttling is off.
    pub(crate) fn resolved(&self) -> Option<Throttling> {
        self.enabled().then(|| Throttling {
            k: self.k(),
            window: self.window(),
            buckets: self.buckets(),
            min_requests: self.min_requests(),
        })
    }

    pub(super) fn validate(&self, path: &str) -> Result<(), Error> {
        let k = self.k();
        if !k.is_finite() || k < 1.0 {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.k"),
                format!("{k} is not a multiplier of 1 or more"),
            )));
        }
        if self.window().is_zero() {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.window"),
                "must be above zero",
            )));
        }
        if self.buckets() == 0 {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.buckets"),
                "must be at least 1",
            )));
        }
        Ok(())
    }
}

/// Resolved throttling settings of one service (throttling on).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Throttling {
    pub(crate) k: f64,
    pub(crate) window: Duration,
    pub(crate) buckets: u32,
    pub(crate) min_requests: u64,
}
