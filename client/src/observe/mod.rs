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
//! crate installs a Prometheus one); with none installed they cost nothing.
//! The names and labels are listed in [`registry_actor::metrics`]: calls by
//! final code, attempts by code and kind (`first`, `retry`, `hedge`, `fork`,
//! `broadcast`), call latency, budget refusals, ejections, and the picker's
//! nodes by state (`pickable`, `ejected`, `held`), set as the picker changes.
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
