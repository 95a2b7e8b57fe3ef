//! [`PickerConfig`]: one service's resolved picker settings.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::{Balancer, Fallback, Selector, ZonePreference};

/// The resolved picker settings of one service, as [`ClientConfig::picker_config`]
/// gives them or built directly.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cluster_client::{Balancer, EjectionConfig, Fallback, PickerConfig, Selector};
///
/// let config = PickerConfig::default()
///     .with_balancer(Balancer::WeightedRoundRobin)
///     .with_selector(Selector::new().with_group("blue"))
///     .with_fallback(Fallback::Strict)
///     .with_ejection(EjectionConfig::default().with_failures(3))
///     .with_panic_grace(Duration::from_secs(10));
/// assert_eq!(config.ejection().failures(), 3);
/// assert_eq!(config.panic_threshold(), 0.5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PickerConfig {
    pub(super) balancer: Balancer,
    pub(super) selector: Selector,
    pub(super) fallback: Fallback,
    pub(super) ejection: EjectionConfig,
    pub(super) panic_threshold: f64,
    pub(super) panic_grace: Duration,
    pub(super) discovery_timeout: Duration,
    pub(super) health_check: Option<Arc<str>>,
    pub(super) locality: Option<ZonePreference>,
}

impl Default for PickerConfig {
    fn default() -> Self {
        Self {
            balancer: Balancer::default(),
            selector: Selector::new(),
            fallback: Fallback::default(),
            ejection: EjectionConfig::default(),
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            panic_grace: DEFAULT_PANIC_GRACE,
            discovery_timeout: DEFAULT_DISCOVERY_TIMEOUT,
            health_check: None,
            locality: None,
        }
    }
}

impl PickerConfig {
    /// The balancer (default `round_robin`).
    pub fn with_balancer(mut self, balancer: Balancer) -> Self {
        self.balancer = balancer;
        self
    }

    /// The service's selector (default: every node); a call's selector is merged
    /// over it.
    pub fn with_selector(mut self, selector: Selector) -> Self {
        self.selector = selector;
        self
    }

    /// The fallback when nothing matches (default `any`).
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// Ejection settings (defaults: see [`EjectionConfig`]).
    pub fn with_ejection(mut self, ejection: EjectionConfig) -> Self {
        self.ejection = ejection;
        self
    }

    /// Panic threshold (default 0.5).
    pub fn with_panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = share;
        self
    }

    /// Panic grace (default 30 s).
    pub fn with_panic_grace(mut self, grace: Duration) -> Self {
        self.panic_grace = grace;
        self
    }

    /// How long a pick waits for the first node set (default 5 s).
    pub fn with_discovery_timeout(mut self, timeout: Duration) -> Self {
        self.discovery_timeout = timeout;
        self
    }

    /// Watches the `grpc.health.v1` status of `service` (`""`: the whole
    /// server) on every node connected to (default: no watch). A node whose
    /// server says it does not serve, or whose watch's connection broke, is
    /// not picked until the server says it serves again.
    pub fn with_health_check(mut self, service: impl Into<Arc<str>>) -> Self {
        self.health_check = Some(service.into());
        self
    }

    /// Prefers the nodes of a zone, spilling over to other zones when too few
    /// of them are pickable (default: no preference; see [`ZonePreference`]).
    pub fn with_locality(mut self, preference: ZonePreference) -> Self {
        self.locality = Some(preference);
        self
    }

    /// The zone preference, if any.
    pub fn locality(&self) -> Option<&ZonePreference> {
        self.locality.as_ref()
    }

    /// The health service watched on each connected node, if any.
    pub fn health_check(&self) -> Option<&Arc<str>> {
        self.health_check.as_ref()
    }

    /// The balancer.
    pub fn balancer(&self) -> Balancer {
        self.balancer
    }

    /// The service's selector.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// The fallback.
    pub fn fallback(&self) -> Fallback {
        self.fallback
    }

    /// The ejection settings.
    pub fn ejection(&self) -> &EjectionConfig {
        &self.ejection
    }

    /// The panic threshold.
    pub fn panic_threshold(&self) -> f64 {
        self.panic_threshold
    }

    /// The panic grace.
    pub fn panic_grace(&self) -> Duration {
        self.panic_grace
    }

    /// The discovery timeout.
    pub fn discovery_timeout(&self) -> Duration {
        self.discovery_timeout
    }
}
