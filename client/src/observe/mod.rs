//! Observability of the client: `tracing` spans and events, metrics through
//! the `metrics` facade, and W3C trace context on outgoing attempts.
//!
//! # Spans
//!
//! Every call runs in an info-level `call` span (`rpc.system = "grpc"`,
//! `rpc.service`, `rpc.method`, `service`, `strategy`, and at its end
//! `attempts` and `code`), with one child `attempt` span per attempt (`node`,
//! `server.address`, `attempt` number, `kind`, `code`). Retry decisions and
//! budget refusals are debug events in the call's span; ejections and held
//! nodes are events of the picker.
//!
//! # Metrics
//!
//! Recorded through the `metrics` facade, so any recorder works (the facade
//! crate installs a Prometheus one); with none installed they cost nothing:
//!
//! | name | labels |
//! |---|---|
//! | `grpc_cluster_client_calls_total` | `service`, `method`, `code` |
//! | `grpc_cluster_client_attempts_total` | `service`, `method`, `code`, `kind` (`first`, `retry`, `hedge`, `fork`, `broadcast`) |
//! | `grpc_cluster_client_call_duration_seconds` (histogram) | `service`, `method` |
//! | `grpc_cluster_client_budget_exhausted_total` | `service` |
//! | `grpc_cluster_client_nodes` (gauge) | `service`, `state` (`pickable`, `ejected`, `held`) |
//! | `grpc_cluster_client_ejections_total` | `service` |
//!
//! `method` is the gRPC path (`/echo.v1.Echo/Say`) and `code` the gRPC name of
//! the status code (`UNAVAILABLE`). An attempt cancelled because its call
//! ended first (the losers of `forking` and `hedging`) counts as `CANCELLED`.
//! The handles of a service and method are resolved on first use, so a
//! recorder must be installed before the first call.

mod call;
mod context;
mod metrics;

pub(crate) use call::{CallObserver, Outcome, Shape};
pub(crate) use metrics::{PickerMetrics, ServiceMetrics};
