//! The `ejection` table: [`EjectionConfig`].

use std::sync::Arc;
use std::time::Duration;

use registry_actor::config::{duration, InvalidValue};
use serde::{Deserialize, Serialize};
use tonic::Code;

use super::*;
use crate::Error;

/// The `ejection` table: when consecutive failures (broken connections, attempt
/// timeouts, answers with one of `codes`) take a node out, for
/// how long, and how many at most. Unset keys take the next level's value, and in
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
        check_share(&format!("{path}.max_share"), self.max_share())
    }
}
