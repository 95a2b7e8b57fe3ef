//! grpc-cluster turns a set of tonic gRPC servers into a cluster.
//!
//! This facade re-exports the three crates and carries the example service:
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
