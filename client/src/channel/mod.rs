//! [`ClusterChannel`]: tonic-generated clients over the cluster.
//!
//! A `ClusterChannel` is a `tower::Service` of HTTP/2 gRPC requests, the
//! service a generated client runs on: `EchoClient::new(handle.channel("echo"))`.
//! Each request goes the way of a [`Call`](crate::Call) of its method: picked
//! from the service's snapshot, run by its strategy under the service's retry
//! budget, within its deadline, on the nodes' shared connections. Only the
//! attempt differs: it sends the request as the generated client encoded it
//! (compression and size limits included), its body replayed from a buffer
//! (`replay`), and it ends at the response headers (`outbound`), where the
//! call commits.
//!
//! The modules form one chain: `replay` → `outbound` → `service`.
//!
//! # Examples
//!
//! ```no_run
//! use cluster_client::{CallOptions, ClientHandle, Strategy};
//! # fn example(handle: ClientHandle) {
//! let channel = handle
//!     .channel("echo")
//!     .with_options(CallOptions::new().with_strategy(Strategy::Failover));
//! // Any generated client takes it, `EchoClient::new(channel)`; so does tonic's own:
//! let grpc = tonic::client::Grpc::new(channel);
//! # let _ = grpc;
//! # }
//! ```
//!
//! Per request, options ride in the request's extensions, and the deadline is
//! the request's own:
//!
//! ```
//! use cluster_client::CallOptions;
//! let mut request = tonic::Request::new(());
//! request.set_timeout(std::time::Duration::from_millis(300));
//! request.extensions_mut().insert(CallOptions::new().with_retries(1));
//! ```

mod outbound;
mod replay;
mod service;

pub use service::{CallRecord, ClusterChannel, ResponseFuture};
