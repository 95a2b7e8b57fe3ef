//! Rate limiting on governor token buckets: global, per method, per caller and
//! per cluster share, all composable, all changeable at run time.
//!
//! [`RateLimits`] holds the limiters built from a [`RateLimitConfig`](crate::RateLimitConfig); the tower
//! middleware [`RateLimitLayer`] → [`RateLimit`] → [`ResponseFuture`](crate::ResponseFuture) checks every
//! call against them before it reaches the service. A call is classified by its
//! request path `/package.Service/Method`; its caller is the name its bearer
//! token authenticates (`[server.auth.callers]`), else the value of the
//! configured metadata key (`x-caller` by default) when
//! `trust_caller_header` is on, else its mutual-TLS client certificate, else its
//! peer IP.
//!
//! # How a call is checked
//!
//! The limits that apply are checked in this order, each taking one token when
//! it admits the call:
//!
//! 1. the caller's own bucket (`caller_rps`, `caller_burst`),
//! 2. the method's bucket (`methods."/pkg.Svc/Method"`),
//! 3. the global bucket (`rps`, `burst`),
//! 4. the cluster share (`cluster_rps / live instances`).
//!
//! The first that refuses answers `RESOURCE_EXHAUSTED` with
//! `grpc-retry-pushback-ms` set to governor's wait until the call would conform
//! (rounded up to whole milliseconds, at least 1). A call refused by a later
//! bucket still took its token from the earlier ones. Because a caller's own
//! bucket comes first, a caller far above its quota is refused before it takes
//! tokens from the shared buckets: it cannot reduce what other callers are
//! admitted.
//! The gRPC health service (`/grpc.health.v1.Health/…`) is never limited.
//!
//! A rate of 0 means unlimited; a burst of 0 means one second's worth of the
//! rate. The cluster share has a burst of one second's worth of the share.
//!
//! # Bounded caller state
//!
//! Callers are tracked in governor's keyed limiter (a `DashMap`). Callers whose
//! bucket is full again are indistinguishable from new ones and are pruned every
//! `prune_interval` ([`RateLimits::prune`]). Every 256 calls on each thread the
//! table size is checked against `max_callers`: over it, idle callers are pruned
//! at once, and if the table is still too large it starts afresh (a `warn!` says
//! so). Caller keys longer than 128 bytes are stored as a 64-bit hash.
//!
//! # Changing limits at run time
//!
//! [`RateLimits::set_config`] swaps in new limits for the next call: no restart,
//! no dropped call. Limiters whose quota did not change keep their state, so a
//! reload of the same values refills nothing. [`RateLimits::set_instances`]
//! changes the cluster share the same way.
//!
//! # Examples
//!
//! ```
//! use server_kit::{RateLimitConfig, RateLimitLayer, RateLimits};
//!
//! let limits = RateLimits::new(
//!     &RateLimitConfig::default()
//!         .with_rps(1000)
//!         .with_method("/echo.v1.Echo/Slow", 10, 0)
//!         .with_caller_rps(50),
//! )?;
//! // Any tonic server: `Server::builder().layer(limits.layer())`.
//! let _layer: RateLimitLayer = limits.layer();
//! limits.set_config(RateLimitConfig::default().with_rps(2000))?;
//! assert_eq!(limits.status().config().rps(), 2000);
//! # Ok::<(), server_kit::Error>(())
//! ```
//!
//! Tests drive the buckets with governor's `FakeRelativeClock` through
//! [`RateLimits::with_clock`].

mod layer;
mod limits;
#[cfg(test)]
mod tests;

pub use layer::{RateLimit, RateLimitLayer};
pub use limits::{LimiterClock, RateLimitStatus, RateLimits};

/// Paths that are never rate limited: the gRPC health service.
pub(crate) fn is_exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}
