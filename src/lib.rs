//! grpc-cluster turns a set of tonic gRPC servers into a cluster.
//!
//! A server's whole `main`, configured by the layered configuration files (it
//! runs on tokio: the crate depends on `tokio` with the `macros` and
//! `rt-multi-thread` features beside `grpc-cluster`):
//!
//! ```no_run
//! use grpc_cluster::echo::{EchoServer, EchoService};
//! use grpc_cluster::{server::ShutdownReport, ServeError};
//!
//! #[tokio::main]
//! async fn main() -> Result<ShutdownReport, ServeError> {
//!     // Any tonic service; here the example echo service.
//!     grpc_cluster::serve(EchoServer::new(EchoService::new("echo-1"))).await
//! }
//! ```
//!
//! This facade has [`serve`] (and [`Serve`]), re-exports the three crates and
//! carries the example service:
//!
//! * [`registry`] (`registry-actor`) — etcd registration and discovery;
//! * [`client`] (`cluster-client`) — the actix cluster client;
//! * [`server`] (`server-kit`) — rate limits, registration and graceful shutdown
//!   for any tonic service;
//! * [`config`] — the layered configuration of all three, with hot reload;
//! * [`echo`] — the `echo.v1.Echo` example service and its implementation;
//! * `testing` (feature `testing`) — a real etcd, or a cluster of them, for
//!   your own tests.
//! * [`metrics`] — the Prometheus recorder and `/metrics` endpoint (`[metrics]`).

pub use cluster_client as client;
pub use registry_actor as registry;
pub use server_kit as server;

pub mod config;
pub mod echo;
pub mod metrics;
mod serve;

/// Fixtures for your own tests (feature `testing`): a real etcd on free
/// loopback ports ([`EtcdServer`](testing::EtcdServer)), or a cluster of them
/// with fault injection ([`EtcdCluster`](testing::EtcdCluster)). They run the
/// `etcd` binary, which must be on `PATH`.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use grpc_cluster::testing::EtcdServer;
///
/// let etcd = EtcdServer::start().await?;
/// let registry = etcd.registry_config(); // RegistryConfig pointing at it
/// # let _ = registry;
/// # Ok(()) }
/// ```
#[cfg(feature = "testing")]
pub mod testing {
    pub use registry_actor::testing::*;
}

pub use serve::{serve, Serve, ServeError};

/// The actix version the client runs on, for code that needs more of it than
/// `Addr::send`.
pub use actix;

/// Runs `main` to completion in a new actix system: the runtime the cluster
/// client's actors need (a plain `#[tokio::main]` has no actix arbiter).
///
/// ```no_run
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     grpc_cluster::run(async {
///         let client = grpc_cluster::config::Settings::load()?.connect_client().await?;
///         # let _ = client;
///         Ok(())
///     })
/// }
/// ```
pub fn run<F: std::future::Future>(main: F) -> F::Output {
    actix::System::new().block_on(main)
}
