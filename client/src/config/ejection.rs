//! The `ejection` table: [`EjectionConfig`].

use std::sync::Arc;
use std::time::Duration;

use registry_actor::config::{duration, InvalidValue};
use serde::{Deserialize, Serialize};
use tonic::Code;

use super::*;
use crate::Error;

/// The `ejection` table: when consecutive failures (broken connections, attempt
/// timeouts, answers with one of `codes`) or, optionally, a success rate far
/// below the other nodes' take a node out, for how long, and how many at most. Unset keys take the next level's value, and in
/// the end the defaults below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EjectionConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) failures: Option<u32>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) base_time: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) max_time: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) codes: Option<Vec<String>>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) success_rate_interval: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) success_rate_stdev_factor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) success_rate_min_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) success_rate_min_nodes: Option<usize>,
}

impl EjectionConfig {
    /// Consecutive connection failures that eject a node (default 5, at least 1).
    pub fn with_failures(mut self, failures: u32) -> Self {
        self.failures = Some(failures);
        self
    }

    /// Length of a first ejection (default 10 s); each further ejection doubles it.
    pub fn with_base_time(mut self, time: Duration) -> Self {
        self.base_time = Some(time);
        self
    }

    /// Longest ejection (default 5 min, at least the base time).
    pub fn with_max_time(mut self, time: Duration) -> Self {
        self.max_time = Some(time);
        self
    }

    /// Largest share of a service's nodes ejected at once (default 0.5).
    pub fn with_max_share(mut self, share: f64) -> Self {
        self.max_share = Some(share);
        self
    }

    /// Status codes a node's answers count as failures, beside broken
    /// connections and attempt timeouts (default `["UNAVAILABLE"]`). Any
    /// other answer, an error or not, counts as a success.
    pub fn with_codes<I: IntoIterator<Item = Code>>(mut self, codes: I) -> Self {
        self.codes = Some(codes.into_iter().map(code_name).collect());
        self
    }

    /// Success-rate ejection (as Envoy's outlier detection), off by default:
    /// every `interval`, among the nodes that had at least `min_requests`
    /// attempts in it (default 100) — when there are at least `min_nodes` of
    /// them (default 5) — a node whose share of successful attempts is below
    /// the mean share by more than `stdev_factor` standard deviations (default
    /// 1.9) is ejected as consecutive failures eject it (same backoff, same
    /// `max_share` cap). Failures are counted as for consecutive failures.
    pub fn with_success_rate(
        mut self,
        interval: Duration,
        stdev_factor: f64,
        min_requests: u64,
        min_nodes: usize,
    ) -> Self {
        self.success_rate_interval = Some(interval);
        self.success_rate_stdev_factor = Some(stdev_factor);
        self.success_rate_min_requests = Some(min_requests);
        self.success_rate_min_nodes = Some(min_nodes);
        self
    }

    /// How often success rates are compared; `None`: success-rate ejection
    /// is off.
    pub fn success_rate_interval(&self) -> Option<Duration> {
        self.success_rate_interval
    }

    /// How many standard deviations below the mean success rate eject a node.
    pub fn success_rate_stdev_factor(&self) -> f64 {
        self.success_rate_stdev_factor
            .unwrap_or(DEFAULT_SUCCESS_RATE_STDEV_FACTOR)
    }

    /// Attempts a node needs in an interval for its success rate to count.
    pub fn success_rate_min_requests(&self) -> u64 {
        self.success_rate_min_requests
            .unwrap_or(DEFAULT_SUCCESS_RATE_MIN_REQUESTS)
    }

    /// Nodes with enough attempts an interval needs for any comparison.
    pub fn success_rate_min_nodes(&self) -> usize {
        self.success_rate_min_nodes
            .unwrap_or(DEFAULT_SUCCESS_RATE_MIN_NODES)
    }

    /// The status codes counted as failures (names that are not codes, which
    /// validation refuses, are left out).
    pub fn codes(&self) -> Arc<[Code]> {
        match &self.codes {
            None => Arc::from([Code::Unavailable]),
            Some(names) => names
                .iter()
                .filter_map(|n| parse_codes("", std::slice::from_ref(n)).ok())
                .flat_map(|c| c.to_vec())
                .collect(),
        }
    }

    /// Consecutive failures that eject a node.
    pub fn failures(&self) -> u32 {
        self.failures.unwrap_or(DEFAULT_FAILURES)
    }

    /// Length of a first ejection.
    pub fn base_time(&self) -> Duration {
        self.base_time.unwrap_or(DEFAULT_BASE_TIME)
    }

    /// Longest ejection.
    pub fn max_time(&self) -> Duration {
        self.max_time.unwrap_or(DEFAULT_MAX_TIME)
    }

    /// Largest share of the nodes ejected at once.
    pub fn max_share(&self) -> f64 {
        self.max_share.unwrap_or(DEFAULT_MAX_SHARE)
    }

    /// These keys over `base`: the ones set here win.
    pub fn merged_over(&self, base: &EjectionConfig) -> EjectionConfig {
        EjectionConfig {
            failures: self.failures.or(base.failures),
            base_time: self.base_time.or(base.base_time),
            max_time: self.max_time.or(base.max_time),
            max_share: self.max_share.or(base.max_share),
            codes: self.codes.clone().or_else(|| base.codes.clone()),
            success_rate_interval: self.success_rate_interval.or(base.success_rate_interval),
            success_rate_stdev_factor: self
                .success_rate_stdev_factor
                .or(base.success_rate_stdev_factor),
            success_rate_min_requests: self
                .success_rate_min_requests
                .or(base.success_rate_min_requests),
            success_rate_min_nodes: self.success_rate_min_nodes.or(base.success_rate_min_nodes),
        }
    }

    pub(super) fn validate(&self, path: &str) -> Result<(), Error> {
        if self.failures() == 0 {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.failures"),
                "must be at least 1",
            )));
        }
        if self.base_time().is_zero() {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.base_time"),
                "must be above zero",
            )));
        }
        if self.max_time() < self.base_time() {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.max_time"),
                format!(
                    "{} is below base_time {}",
                    duration::format(self.max_time()),
                    duration::format(self.base_time())
                ),
            )));
        }
        if let Some(codes) = &self.codes {
            parse_codes(&format!("{path}.codes"), codes)?;
        }
        if self.success_rate_interval.is_some_and(|i| i.is_zero()) {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.success_rate_interval"),
                "must be above zero (leave it out for no success-rate ejection)",
            )));
        }
        let factor = self.success_rate_stdev_factor();
        if !factor.is_finite() || factor < 0.0 {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.success_rate_stdev_factor"),
                format!("{factor} is not a number of standard deviations (0 or more)"),
            )));
        }
        if self.success_rate_min_requests() == 0 {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.success_rate_min_requests"),
                "must be at least 1",
            )));
        }
        if self.success_rate_min_nodes() < 2 {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.success_rate_min_nodes"),
                "must be at least 2 (one node has nothing to be compared with)",
            )));
        }
        check_share(&format!("{path}.max_share"), self.max_share())
    }
}
