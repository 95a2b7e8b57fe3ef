//! Serve any tonic service as a member of a grpc-cluster.
//!
//! * [`serve`] / [`ServeBuilder`] — binds, serves, adds the gRPC health service
//!   and optional bearer-token auth, registers in etcd once bound (advertising
//!   the real port), and shuts down in order on SIGTERM/SIGINT or
//!   [`ServeHandle::shutdown`]: deregister → lame duck → `NOT_SERVING` → stop
//!   accepting + GOAWAY → drain → cancel the rest ([`ShutdownReport`]).
//! * [`rate_limit`] — governor token buckets, global, per method, per caller
//!   and per cluster share, as a tower layer ([`RateLimitLayer`]); refusals are
//!   `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`. Limits change at run
//!   time through [`ServeHandle::set_rate_limits`].
//! * [`ServerConfig`] — the `[server]` section of the layered configuration.
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
//! use server_kit::{serve, Routes, ServerConfig};
//!
//! let report = serve(Routes::new(my_service), ServerConfig::default()).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod auth;
mod cluster;
pub mod config;
mod drain;
mod error;
pub mod rate_limit;
mod response;
mod serve;

pub use auth::{BearerAuth, BearerAuthLayer};
pub use config::{MethodLimit, RateLimitConfig, ServerConfig, ShutdownConfig};
pub use error::{Error, Limit, RETRY_PUSHBACK_KEY};
/// governor, re-exported for its clocks (`governor::clock::FakeRelativeClock`
/// in tests, [`ServeBuilder::clock`]).
pub use governor;
pub use rate_limit::{LimiterClock, RateLimit, RateLimitLayer, RateLimitStatus, RateLimits};
pub use response::ResponseFuture;
pub use serve::{
    serve, Deregistration, Phase, Routes, ServeBuilder, ServeHandle, Serving, ShutdownReport,
    ShutdownTrigger,
};
