//! Resolved call settings: [`CallPolicy`], [`Hedging`], and a service's [`ServicePolicy`].

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use super::*;
use crate::policy::{CodeSet, Strategy};

/// The resolved call settings of one method ([`ClientConfig::call_policy`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CallPolicy {
    pub(super) strategy: Strategy,
    pub(super) retries: u32,
    pub(super) timeout: Duration,
    pub(super) attempt_timeout: Option<Duration>,
    /// Set with [`set_retry_codes`](Self::set_retry_codes), which keeps
    /// `retry_set` in step.
    pub(super) retry_codes: Arc<[Code]>,
    /// `retry_codes` as the set calls test.
    pub(super) retry_set: CodeSet,
    pub(super) hedging: Hedging,
    pub(super) backoff_min: Duration,
    pub(super) backoff_max: Duration,
}

impl CallPolicy {
    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Extra attempts of failover and failretry.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The deadline of a call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The bound of each attempt, if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// Hedging's settings.
    pub fn hedging(&self) -> &Hedging {
        &self.hedging
    }

    /// Codes retried by failover and failretry.
    pub fn retry_codes(&self) -> &Arc<[Code]> {
        &self.retry_codes
    }

    /// The retried codes as a set.
    pub(crate) fn retry_set(&self) -> CodeSet {
        self.retry_set
    }

    /// Sets the retried codes (and their set).
    pub(super) fn set_retry_codes(&mut self, codes: Arc<[Code]>) {
        self.retry_set = CodeSet::of(&codes);
        self.retry_codes = codes;
    }

    /// Failretry's backoff bounds.
    pub fn backoff(&self) -> (Duration, Duration) {
        (self.backoff_min, self.backoff_max)
    }
}

/// The resolved settings of the `hedging` strategy (gRFC A6's hedging policy).
#[derive(Debug, Clone, PartialEq)]
pub struct Hedging {
    pub(super) delay: Duration,
    pub(super) max_attempts: u32,
    pub(super) non_fatal: Arc<[Code]>,
}

impl Hedging {
    /// The wait before each further attempt.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The most attempts of one call, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The codes that let the other attempts go on.
    pub fn non_fatal_codes(&self) -> &Arc<[Code]> {
        &self.non_fatal
    }
}

/// Everything the calls of one service use, resolved from the configuration
/// once per load or reload; calls only look it up.
#[derive(Debug, Clone)]
pub(crate) struct ServicePolicy {
    pub(crate) picker: PickerConfig,
    pub(crate) budget: (f64, u32),
    /// Adaptive throttling; `None` when off.
    pub(crate) throttling: Option<super::Throttling>,
    pub(crate) default_call: Arc<CallPolicy>,
    /// The method tables, by their key: a full path or a bare name.
    pub(crate) methods: foldhash::HashMap<Box<str>, Arc<CallPolicy>>,
}

impl ServicePolicy {
    /// The call settings of the method at `path` (`/echo.v1.Echo/Say`): its
    /// full path's table, else its name's, else the service's.
    pub(crate) fn call(&self, path: &str) -> &Arc<CallPolicy> {
        if self.methods.is_empty() {
            return &self.default_call;
        }
        self.methods
            .get(path)
            .or_else(|| self.methods.get(method_name(path)))
            .unwrap_or(&self.default_call)
    }
}

/// The method name of a path: the part after the last `/` (`Say`); a bare
/// name is its own.
pub(crate) fn method_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}
