//! `serve-minimal`: a whole cluster member in one call. Everything comes from
//! the layered configuration (`./config` or `GRPC_CLUSTER_CONFIG_DIR`, then
//! `GRPC_CLUSTER__…` variables): the address, the service and node id it
//! registers as, the etcd endpoints, the rate limits (followed while it runs) and
//! the shutdown phases.
//!
//! ```text
//! GRPC_CLUSTER__SERVER__SERVICE=echo GRPC_CLUSTER__REGISTRY__ENDPOINTS=127.0.0.1:2379 \
//!     cargo run --example serve-minimal
//! ```
//!
//! Exits 0 after the ordered shutdown on SIGTERM or SIGINT; on a bad
//! configuration or a port it cannot bind, prints the culprit and exits 1.

use grpc_cluster::echo::{EchoServer, EchoService};
use grpc_cluster::server::ShutdownReport;
use grpc_cluster::ServeError;

#[tokio::main]
async fn main() -> Result<ShutdownReport, ServeError> {
    grpc_cluster::serve(EchoServer::new(EchoService::new("serve-minimal"))).await
}
