//! grpc-cluster turns a set of tonic gRPC servers into a cluster.
//!
//! A server's whole `main`, configured by the layered configuration files:
//!
//! ```no_run
//! # use grpc_cluster::echo::{EchoServer, EchoService};
//! # use grpc_cluster::{server::ShutdownReport, ServeError};
//! # #[tokio::main]
//! # async fn main() -> Result<ShutdownReport, ServeError> {
//! #     let svc = EchoService::new("echo-1");
//! grpc_cluster::serve(EchoServer::new(svc)).await
//! # }
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
//! * [`echo`] — the `echo.v1.Echo` example service and its implementation.

pub use cluster_client as client;
pub use registry_actor as registry;
pub use server_kit as server;

pub mod config;
pub mod echo;
mod serve;

pub use serve::{serve, Serve, ServeError};
