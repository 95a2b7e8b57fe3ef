//! Serve any tonic service as a member of a grpc-cluster.
//!
//! Applications depend on the facade crate `grpc-cluster`: its
//! `grpc_cluster::serve` runs this kit with the layered configuration, and it
//! re-exports this crate as `grpc_cluster::server`. Depend on `server-kit`
//! itself to serve with settings built in code.
//!
//! * [`serve`] — the whole kit in one call: binds, registers in etcd once bound
//!   (advertising the real port), rate limits, adds the gRPC health service and
//!   optional bearer-token auth, and shuts down in order on SIGTERM/SIGINT:
//!   `NOT_SERVING` → deregister → lame duck → stop accepting + GOAWAY → drain →
//!   cancel the rest; returns the [`ShutdownReport`].
//! * [`ServeBuilder`] — the same, with a [`ServeHandle`] for runtime control
//!   ([`ServeHandle::shutdown`], [`ServeHandle::pause`]/[`resume`](ServeHandle::resume)
//!   out of discovery and back, new rate limits, the registration state), your
//!   own tower layers ([`ServeBuilder::layer`]) and tonic server options
//!   ([`ServeBuilder::server_options`]), and options for tests (no signals, a
//!   fake clock, no registry).
//! * [`rate_limit`] — governor token buckets, global, per method, per caller
//!   and per cluster share, as a tower layer ([`RateLimitLayer`]); refusals are
//!   `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`. Limits change at run
//!   time through [`ServeHandle::set_rate_limits`].
//! * [`shedding`] — adaptive load shedding (`[server.shedding]`, off by
//!   default): an in-flight limit learned from throughput × least latency;
//!   calls above it are `RESOURCE_EXHAUSTED` with a pushback.
//! * [`ServerConfig`] — the `[server]` section of the layered configuration.
//! * Observability — every request runs in an info-level `request` span
//!   (`method`, `caller`, `code`) and is counted through the `metrics` facade
//!   (requests by code, latency, rate-limit refusals by scope, shed calls,
//!   calls in flight; names in [`registry_actor::metrics`]); with the `opentelemetry`
//!   feature an inbound W3C `traceparent` is the span's parent.
//!
//! # Start-up
//!
//! 1. The configuration is checked (errors name the key), and the SIGTERM and
//!    SIGINT listeners are registered: from here on a signal starts the ordered
//!    shutdown instead of killing the process.
//! 2. `server.listen` is bound; with port 0 the real port is what is advertised.
//! 3. The gRPC health service (`grpc.health.v1.Health`) is added and reports
//!    `SERVING` for `""` and every service of the [`Routes`].
//! 4. The middleware is stacked, outermost first: bearer-token check
//!    (`server.token`), the request's span and metrics,
//!    [rate limits](crate::rate_limit), [load shedding](crate::shedding),
//!    in-flight counting, then the layers of
//!    [`ServeBuilder::layer`] (the first added outermost), then the services:
//!    a request goes straight to the service its path names, with no router
//!    in between (see [`Routes`]).
//! 5. Only now, with a registry given, the node registers through a
//!    [`Registrar`](registry_actor::Registrar) (lease, keepalive,
//!    re-registration for ever; etcd down at start-up is retried, not fatal),
//!    and a watch of its own service keeps the live instance count for
//!    `cluster_rps`.
//!
//! # Shutdown
//!
//! On SIGTERM or SIGINT (unless [`ServeBuilder::signals`] turned them off), or
//! [`ServeHandle::shutdown`], in this order:
//!
//! 1. **NOT_SERVING**: the health service reports it for every service (and
//!    `""`), so clients watching it stop picking the node at once, even while
//!    etcd is slow or unreachable;
//! 2. **deregister**: the lease is revoked, then etcd is read until the key is
//!    seen gone (at most `server.shutdown.deregister_timeout`; past it, or with
//!    etcd down, the key expires with its lease);
//! 3. **lame duck**: serving goes on for `server.shutdown.lame_duck`, so clients
//!    that picked this node just before see it leave;
//! 4. **stop accepting**: the listener is closed and GOAWAY is sent on every
//!    connection;
//! 5. **drain**: calls in flight finish, up to `server.shutdown.drain_timeout`;
//!    health `Watch` streams send their `NOT_SERVING` and end with
//!    `UNAVAILABLE` at once, so a health watcher does not hold the drain;
//! 6. **cancel**: connections still open at the deadline are closed, which
//!    cancels their calls (handlers are dropped, clients see the stream reset).
//!
//! The [`ShutdownReport`] says what was drained and cancelled and how long each
//! step took; it is logged and returned.
//!
//! # Not included
//!
//! gRPC server reflection is not included: tonic-reflection needs the file
//! descriptor sets of the served protos, which a generic kit does not have.
//!
//! # Examples
//!
//! ```no_run
//! # use std::convert::Infallible;
//! # use tonic::{body::Body, server::NamedService};
//! # async fn run<S>(my_service: S) -> Result<(), server_kit::Error>
//! # where
//! #     S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
//! #         + NamedService + Clone + Send + Sync + 'static,
//! #     S::Future: Send + 'static,
//! # {
//! use registry_actor::RegistryConfig;
//! use server_kit::ServerConfig;
//!
//! let server = ServerConfig::default().with_service("echo");
//! let report = server_kit::serve(my_service, server, RegistryConfig::default()).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod auth;
mod cluster;
pub mod config;
mod drain;
mod error;
mod observe;
pub mod rate_limit;
mod response;
mod serve;
pub mod shedding;

pub use auth::{AuthenticatedCaller, BearerAuth, BearerAuthLayer};
pub use config::{
    AuthConfig, MethodLimit, RateLimitConfig, ServerConfig, ServerTlsConfig, ShedConfig,
    ShutdownConfig,
};
pub use error::{Error, Limit, RETRY_PUSHBACK_KEY};
/// governor, re-exported for its clocks (`governor::clock::FakeRelativeClock`
/// in tests, [`ServeBuilder::clock`]).
pub use governor;
pub use rate_limit::{LimiterClock, RateLimit, RateLimitLayer, RateLimitStatus, RateLimits};
pub use response::ResponseFuture;
pub use serve::{
    serve, Deregistration, LayeredService, Phase, Routes, ServeBuilder, ServeHandle, Serving,
    ShutdownReport, ShutdownTrigger, REGISTRATION_HEALTH,
};
