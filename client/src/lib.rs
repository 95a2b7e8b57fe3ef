//! The cluster client of grpc-cluster: calls the nodes of a service found in
//! etcd, by strategy (failfast, failover, failretry, forking, broadcast,
//! multicast), with balancers, selectors, retry budgets and deadlines.
//!
//! Applications depend on the facade crate `grpc-cluster`: it re-exports this
//! crate as `grpc_cluster::client`, loads `[client]` with the rest of the
//! configuration and starts the actix system the client runs on. Depend on
//! `cluster-client` itself only to embed the client without the facade.
//!
//! # Examples
//!
//! ```no_run
//! use cluster_client::{Call, CallOptions, ClientConfig, ClusterClient, Method, Strategy};
//! use registry_actor::RegistryConfig;
//! # #[derive(Clone, PartialEq, prost::Message)] struct SayRequest { #[prost(string, tag = "1")] message: String }
//! # #[derive(Clone, PartialEq, prost::Message)] struct SayReply { #[prost(string, tag = "1")] message: String }
//! const SAY: Method<SayRequest, SayReply> = Method::from_static("/echo.v1.Echo/Say");
//!
//! # #[actix::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = RegistryConfig::default().with_endpoints(["127.0.0.1:2379"]);
//! let client = ClusterClient::connect(&registry, ClientConfig::default()).await?;
//! let call = Call::new("echo", SAY, SayRequest { message: "hi".into() })
//!     .with_options(CallOptions::new().with_strategy(Strategy::Failover));
//! let reply = client.send(call).await??;
//! println!("{} answered {:?}", reply.node.id(), reply.message.message);
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! * [`ClusterClient`], the call actor, and its [`ClientHandle`]: run [`Call`]
//!   and [`Broadcast`] by their strategy (failfast, failover, failretry,
//!   forking, broadcast, multicast) under one [`RetryBudget`] per service. The
//!   handle runs them in the caller's own task.
//! * [`ClusterChannel`]: the `tower::Service` tonic-generated clients run on
//!   (`EchoClient::new(handle.channel("echo"))`); each request runs the
//!   strategy a `Call` of its method would, its body replayed for retries up
//!   to `client.retry_buffer` and committed at the response headers (gRFC A6).
//!   [`CallOptions::inherit`] carries an inbound call's deadline, request id
//!   and trace context into the calls made while serving it.
//! * **Pickers**: one [`PickerActor`] per service, subscribed to the
//!   [`RegistryActor`](registry_actor::RegistryActor), that chooses the node of
//!   each call. Calls pick from the snapshot it publishes, without a message
//!   or a lock; the actor owns every change.
//! * **Connections**: one [`ConnectionActor`] per node picked and runtime
//!   calling it, owning a long-lived channel made on that runtime; calls run
//!   attempts on its [`Connection`] handle.
//! * **Observability**: each call runs in an info-level `call` span with an
//!   `attempt` child per attempt, and counts its calls, attempts and latency
//!   through the `metrics` facade (names in [`registry_actor::metrics`]);
//!   with the `opentelemetry` feature each attempt carries the W3C
//!   `traceparent` of its span.
//!
//! ```text
//! app ──Call/Broadcast──▶ ClusterClient ─┐      (or ClientHandle::call)
//!                                        │ pick: load the published snapshot
//! RegistryActor ──NodesChanged──▶ PickerActor   (builds and publishes snapshots:
//!                                   ▲            balancer, selectors, ejection,
//!                                   │            panic threshold)
//!         ConnectionFailed, ConnectionSucceeded ── connections
//! ```
//!
//! # Picking
//!
//! * **Balancers** ([`Balancer`]): `pick_first`, `round_robin`, `random`,
//!   `weighted_random` (alias table), `weighted_round_robin` (smooth, as nginx),
//!   `least_request` (power of two choices on calls in flight), `consistent_hash`
//!   (ring of virtual nodes; the key comes with the call as a [`HashKey`]).
//! * **Selectors** ([`Selector`]): version (exact or a semver range such as
//!   `>=1.2, <2`), group, zone, labels; [`Fallback`] `strict` (error naming the
//!   selector and the versions available) or `any` (all nodes, for a unicast
//!   call; a broadcast goes to matching nodes only).
//! * **Exclusion**: a [`Pick`] lists the nodes its call already tried.
//! * **Ejection**: N consecutive connection failures eject a node for a backoff
//!   growing per ejection, never more than a share of the nodes at once.
//! * **Panic threshold**: a registry change removing more than a share of the
//!   nodes at once is held until those nodes fail or a grace period passes.
//!
//! Everything a pick reads is built when the node set (or an ejection) changes,
//! into an immutable snapshot published whole; a pick only steps a prebuilt
//! balancer, without a lock. [`Picker`] is that logic without the actor, and
//! [`PickerView`] reads what an actor publishes.
//!
//! # Configuration
//!
//! [`ClientConfig`] is the picker part of `[client]` with its
//! `[client.services.NAME]` tables ([`ServiceConfig`], [`EjectionConfig`]);
//! [`ClientConfig::picker_config`] resolves a service's [`PickerConfig`].

mod balance;
mod budget;
mod call;
mod channel;
mod chunk_diff;
mod config;
mod connection;
mod ejection;
mod error;
mod hash;
mod locality;
mod method;
mod observe;
mod panic_guard;
mod picker;
mod policy;
mod selector;
mod throttle;

pub use balance::Balancer;
pub use budget::RetryBudget;
pub use call::{
    Attempt, Broadcast, BroadcastReply, BudgetTokens, Call, CallError, CallFuture, CallOptions,
    Cause, ClientHandle, ClusterClient, Completion, GetHandle, NodeResult, Reply, ServiceStatus,
    UpdateConfig, CLIENT_THREAD_NAME, RETRY_PUSHBACK_KEY,
};
pub use channel::{CallRecord, ClusterChannel, ResponseFuture};
pub use config::{
    CallPolicy, ClientConfig, EjectionConfig, Hedging, MethodConfig, PickerConfig, ServiceConfig,
    ThrottlingConfig,
};
pub use connection::{
    AllowedNetworks, ClientTls, Close, Connection, ConnectionActor, ConnectionSettings,
};
pub use error::Error;
pub use hash::HashKey;
pub use locality::{Locality, ZonePreference};
pub use method::Method;
pub use picker::{
    ConnectionFailed, ConnectionSucceeded, GoingAway, HealthChanged, Inspect, NodeHandle, NodeRef,
    NodeStatus, Pick, PickAll, Picked, Picker, PickerActor, PickerStatus, PickerView, PushedBack,
    Reconfigure,
};
pub use policy::Strategy;
pub use selector::{Fallback, Selector};
pub use throttle::AdaptiveThrottle;
