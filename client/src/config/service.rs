//! `[client.services.NAME]` and its `methods` tables: [`ServiceConfig`], [`MethodConfig`].

use std::collections::BTreeMap;
use std::time::Duration;

use registry_actor::config::InvalidValue;
use serde::{Deserialize, Serialize};
use tonic::Code;

use super::*;
use crate::policy::Strategy;
use crate::{Balancer, Error, Fallback, Locality};

/// One `[client.services.NAME]` table: every key is optional and falls back to
/// the `[client]` default. See [`ClientConfig`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) balancer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) locality: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) locality_min_healthy: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) zone_priority: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) fallback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ejection: Option<EjectionConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) throttling: Option<ThrottlingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) panic_threshold: Option<f64>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) panic_grace: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) discovery_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) health_check: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) health_service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) strategy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) retries: Option<u32>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) timeout: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) attempt_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) retry_codes: Option<Vec<String>>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) hedging_delay: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) non_fatal_codes: Option<Vec<String>>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) retry_backoff: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) retry_backoff_max: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) budget_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) budget_min_per_sec: Option<u32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) methods: BTreeMap<String, MethodConfig>,
}

impl ServiceConfig {
    /// Call settings of this whole service (unset keys: `[client]`'s).
    pub fn with_call(mut self, call: MethodConfig) -> Self {
        self.strategy = call.strategy;
        self.retries = call.retries;
        self.timeout = call.timeout;
        self.attempt_timeout = call.attempt_timeout;
        self.retry_codes = call.retry_codes;
        self.hedging_delay = call.hedging_delay;
        self.max_attempts = call.max_attempts;
        self.non_fatal_codes = call.non_fatal_codes;
        self
    }

    /// The service-level call keys, as a [`MethodConfig`].
    pub(super) fn call(&self) -> MethodConfig {
        MethodConfig {
            strategy: self.strategy.clone(),
            retries: self.retries,
            timeout: self.timeout,
            attempt_timeout: self.attempt_timeout,
            retry_codes: self.retry_codes.clone(),
            hedging_delay: self.hedging_delay,
            max_attempts: self.max_attempts,
            non_fatal_codes: self.non_fatal_codes.clone(),
        }
    }

    /// Call settings of one method, by name (`Say`) or full path
    /// (`/echo.v1.Echo/Say`, which wins over the name); unset keys come from
    /// the service, then `[client]`.
    pub fn with_method(mut self, method: impl Into<String>, call: MethodConfig) -> Self {
        self.methods.insert(method.into(), call);
        self
    }

    /// The balancer of this service (default: `[client]`'s).
    pub fn with_balancer(mut self, balancer: Balancer) -> Self {
        self.balancer = Some(balancer.name().to_owned());
        self
    }

    /// Only nodes of this version, exact or a semver range (default: any).
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Only nodes of this group (default: any).
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The zone of this service's calls (default: `[client]`'s), a selector
    /// or a preference as the locality says.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// The locality of this service (default: `[client]`'s; see
    /// [`ClientConfig::with_locality`]).
    pub fn with_locality(mut self, locality: Locality) -> Self {
        self.locality = Some(locality.name().to_owned());
        self
    }

    /// Under `prefer`, the pickable nodes the zone must have (default:
    /// `[client]`'s).
    pub fn with_locality_min_healthy(mut self, nodes: usize) -> Self {
        self.locality_min_healthy = Some(nodes);
        self
    }

    /// Under `prefer`, the zones spilled over to first (default: `[client]`'s).
    pub fn with_zone_priority<I, S>(mut self, zones: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.zone_priority = Some(zones.into_iter().map(Into::into).collect());
        self
    }

    /// Only nodes with these labels (default: none required), as the table
    /// `labels = { canary = "false" }`.
    pub fn with_labels<I, K, V>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.labels = Some(
            labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// The fallback when nothing matches (default: `[client]`'s).
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = Some(fallback.name().to_owned());
        self
    }

    /// Adaptive throttling keys of this service; unset ones come from
    /// `[client.throttling]`.
    pub fn with_throttling(mut self, throttling: ThrottlingConfig) -> Self {
        self.throttling = Some(throttling);
        self
    }

    /// Ejection keys of this service; unset ones come from `[client.ejection]`.
    pub fn with_ejection(mut self, ejection: EjectionConfig) -> Self {
        self.ejection = Some(ejection);
        self
    }

    /// The panic threshold of this service (default: `[client]`'s).
    pub fn with_panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = Some(share);
        self
    }

    /// The panic grace of this service (default: `[client]`'s).
    pub fn with_panic_grace(mut self, grace: Duration) -> Self {
        self.panic_grace = Some(grace);
        self
    }

    /// Whether to watch the health of this service's nodes (default:
    /// `[client]`'s; see [`ClientConfig::with_health_check`]).
    pub fn with_health_check(mut self, watch: bool) -> Self {
        self.health_check = Some(watch);
        self
    }

    /// The service name the health watch of this service's nodes asks about
    /// (default: `[client]`'s).
    pub fn with_health_service(mut self, service: impl Into<String>) -> Self {
        self.health_service = Some(service.into());
        self
    }

    /// The retry budget of this service (default: `[client]`'s).
    pub fn with_budget(mut self, ratio: f64, min_per_sec: u32) -> Self {
        self.budget_ratio = Some(ratio);
        self.budget_min_per_sec = Some(min_per_sec);
        self
    }

    /// Failretry's backoff of this service (default: `[client]`'s).
    pub fn with_retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.retry_backoff = Some(min);
        self.retry_backoff_max = Some(max);
        self
    }
}

/// Call settings of a service (`[client.services.NAME]`) or a method
/// (`[client.services.NAME.methods.METHOD]`); unset keys come from the level above.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) strategy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) retries: Option<u32>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) timeout: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) attempt_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) retry_codes: Option<Vec<String>>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub(super) hedging_delay: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) non_fatal_codes: Option<Vec<String>>,
}

impl MethodConfig {
    /// The strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy.name());
        self
    }

    /// Extra attempts of failover and failretry.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// The deadline of a call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The bound of each attempt (see [`ClientConfig::with_attempt_timeout`]).
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Hedging's settings (see [`ClientConfig::with_hedging`]).
    pub fn with_hedging<I: IntoIterator<Item = Code>>(
        mut self,
        delay: Duration,
        max_attempts: u32,
        non_fatal: I,
    ) -> Self {
        self.hedging_delay = Some(delay);
        self.max_attempts = Some(max_attempts);
        self.non_fatal_codes = Some(non_fatal.into_iter().map(code_name).collect());
        self
    }

    pub(super) fn apply(&self, path: &str, policy: &mut CallPolicy) -> Result<(), Error> {
        if let Some(s) = &self.strategy {
            policy.strategy = parse_strategy(&format!("{path}.strategy"), s)?;
        }
        if let Some(r) = self.retries {
            policy.retries = r;
        }
        if let Some(t) = self.timeout {
            if t.is_zero() {
                return Err(Error::Config(InvalidValue::new(
                    format!("{path}.timeout"),
                    "must be above zero",
                )));
            }
            policy.timeout = t;
        }
        if let Some(t) = self.attempt_timeout {
            if t.is_zero() {
                return Err(Error::Config(InvalidValue::new(
                    format!("{path}.attempt_timeout"),
                    "must be above zero",
                )));
            }
            policy.attempt_timeout = Some(t);
        }
        if let Some(c) = &self.retry_codes {
            policy.set_retry_codes(parse_codes(&format!("{path}.retry_codes"), c)?);
        }
        if let Some(d) = self.hedging_delay {
            policy.hedging.delay = d;
        }
        if let Some(n) = self.max_attempts {
            if n == 0 {
                return Err(Error::Config(InvalidValue::new(
                    format!("{path}.max_attempts"),
                    "must be at least 1",
                )));
            }
            policy.hedging.max_attempts = n;
        }
        if let Some(c) = &self.non_fatal_codes {
            policy.hedging.non_fatal = parse_codes(&format!("{path}.non_fatal_codes"), c)?;
        }
        Ok(())
    }
}
