//! The call actor: [`ClusterClient`], its [`ClientHandle`], and the strategies.
//!
//! Apps send a [`ClusterClient`] typed [`Call`] and [`Broadcast`] messages, or
//! run the same values through a [`ClientHandle`] (`call`, `broadcast`), which
//! skips the actor's mailbox and runs the strategy in the caller's own task. For
//! each call the client resolves the method's settings (per call over per method
//! over per service over `[client]`), picks nodes from the service's
//! [`PickerActor`](crate::PickerActor) state, and runs attempts on the nodes'
//! connections:
//!
//! | strategy | attempts |
//! |---|---|
//! | `failfast` | one |
//! | `failover` | up to `retries` more, each on a node not yet tried, for retryable codes (`UNAVAILABLE` by default); `RESOURCE_EXHAUSTED` moves on unless the server's pushback forbids retrying |
//! | `failretry` | up to `retries` more on the same node, after a backoff (or the server's pushback, when longer) |
//! | `forking(K)` | K nodes at once; the first success wins, the rest are cancelled |
//! | `hedging` | one, then another on a new node every `hedging_delay` until one answers, at most `max_attempts`; a non-fatal code (or attempt timeout) starts the next at once, a positive pushback delays it, a negative one stops further hedges; the first success or fatal code wins and cancels the rest |
//! | broadcast | every matching node in parallel; completion `all`, `quorum(k)` or `first_success` |
//! | multicast | a broadcast with a selector, e.g. one group |
//!
//! Every extra attempt of every strategy (failover and failretry retries, the
//! extra forks, hedges) draws from the service's retry budget, 20 % of calls + 10/s by
//! default. Broadcast calls are the purpose of the call, not extra attempts, and
//! do not draw from it. No attempt starts after the call's deadline, and each
//! carries the remaining deadline as `grpc-timeout`.
//!
//! Each call carries the configured caller as `x-caller`, the bearer token if
//! any, the call's own metadata, and with `client.request_id = true` an
//! `x-request-id` (one per call, the same on all its attempts). A failed call
//! answers a [`CallError`] with the final code, its [`Cause`] and every attempt
//! (node, code, latency); it converts into a `tonic::Status`.
//!
//! The modules form one chain, each using only those before it: `messages` →
//! `status` → `inherit` → `service` → `error` → `outcome` → `rpc` →
//! `strategy` → `hedging` → `system` → `handle` → `actor` → `spawn`.
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
//! let client = ClusterClient::connect(&RegistryConfig::default(), ClientConfig::default()).await?;
//! let call = Call::new("echo", SAY, SayRequest { message: "hi".into() })
//!     .with_options(CallOptions::new().with_strategy(Strategy::Failover));
//! let reply = client.send(call).await??;
//! println!("{} answered after {} attempt(s)", reply.node.id(), reply.attempts.len());
//!
//! // The same, in this task: no mailbox, no task hand-off.
//! let handle = client.send(cluster_client::GetHandle).await?;
//! let reply = handle.call(Call::new("echo", SAY, SayRequest { message: "hi".into() })).await?;
//! println!("{}", reply.message.message);
//! # Ok(()) }
//! ```

mod actor;
mod error;
mod handle;
mod hedging;
mod inherit;
mod messages;
mod outcome;
mod rpc;
mod service;
mod spawn;
mod status;
mod strategy;
mod system;

pub use actor::{BudgetTokens, ClusterClient, ServiceStatus, UpdateConfig};
pub use error::{CallError, Cause};
pub(crate) use handle::run_planned;
pub use handle::{CallFuture, ClientHandle, GetHandle};
pub use messages::{
    Attempt, Broadcast, BroadcastReply, Call, CallOptions, Completion, NodeResult, Reply,
};
pub(crate) use rpc::Rpc;
pub use spawn::CLIENT_THREAD_NAME;
pub use status::RETRY_PUSHBACK_KEY;
pub(crate) use status::{parse_grpc_timeout, GRPC_TIMEOUT_HEADER, REQUEST_ID, REQUEST_ID_HEADER};
