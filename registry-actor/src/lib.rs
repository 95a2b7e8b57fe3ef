//! etcd service registration and discovery for grpc-cluster.
//!
//! Applications depend on the facade crate `grpc-cluster`, which re-exports this
//! crate as `grpc_cluster::registry`; its server kit registers servers and its
//! client discovers them through this crate. Depend on `registry-actor` itself
//! to register or watch nodes without them.
//!
//! # Examples
//!
//! ```no_run
//! use registry_actor::{Node, Registrar, RegistryConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = RegistryConfig::default().with_endpoints(["127.0.0.1:2379"]);
//! let node = Node::new("echo-1", "echo", "127.0.0.1:50051")?.with_version("1.2.0");
//! let registrar = Registrar::start(registry_actor::connect(&config).await?, node, &config);
//! // … serve, then take the node out of discovery before exiting:
//! registrar.deregister().await?;
//! # Ok(()) }
//! ```
//!
//! # Contents
//!
//! * [`Node`] — one replica of a service and its etcd value format.
//! * [`Registrar`] — keeps one node registered: lease, keepalive at TTL/3, and
//!   re-registration after any loss, for ever, with capped backoff.
//! * [`RegistryActor`] — one etcd watch per service; pushes
//!   [`NodesChanged`]`(NodeSet, revision)` to every subscriber; resumes after
//!   stream errors, re-reads after compaction, keeps the last known set while etcd
//!   is down, and with `registry.snapshot_file` keeps it on disk for a start
//!   while etcd is down ([`WatchState`] tells where a set came from).
//! * [`RegistryConfig`] — the `[registry]` settings, and [`connect`] to open an
//!   [`Etcd`] connection to every member of the cluster with them: requests and
//!   streams move to another member when one dies, freezes or loses its leader.
//! * [`metrics`] — the names and labels of every metric grpc-cluster records
//!   through the `metrics` facade; the registrar keeps
//!   `grpc_cluster_registration_up`, each watch its reconnects, resyncs and
//!   decode errors.
//! * `testing` (feature `testing`) — a real etcd, or a cluster of them, on free
//!   loopback ports for tests.
//!
//! Keys are `{prefix}/{service}/{node_id}`, default prefix `/grpc-cluster/services`.

mod backoff;
pub mod config;
mod error;
mod etcd;
pub mod metrics;
mod node;
mod registrar;
mod registry;
mod secret;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use backoff::Backoff;
pub use config::RegistryConfig;
pub use error::Error;
pub use etcd::{connect, Etcd, HEDGE_DELAY};
pub use etcd_client;
pub use node::{
    node_key, service_prefix, DecodeError, DecodeErrorKind, Node, NodeChunk, NodeSet, Nodes,
    DEFAULT_WEIGHT,
};
pub use registrar::{Registrar, RegistrationState};
pub use registry::{
    NodesChanged, RegistryActor, RegistryStats, ServiceWatch, Snapshot, Stats, Subscribe,
    SubscriptionId, Unsubscribe,
};
pub use registry::{WatchState, WatchStatus};
pub use secret::Secret;
pub use tls::{TlsConfig, TlsFiles};
