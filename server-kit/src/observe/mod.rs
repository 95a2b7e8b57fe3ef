//! Observability of served requests: a `tracing` span per request, metrics
//! through the `metrics` facade, and W3C trace context.
//!
//! [`ObserveLayer`] sits right inside the bearer-token check, so it sees every
//! authenticated request, rate-limit refusals included:
//!
//! * an info-level `request` span (`method`, `caller`, and at the end `code`)
//!   in which the service's own future runs, so the handler's spans and the
//!   calls it makes are its children. `caller` is the caller a token
//!   authenticated, else the request's `x-caller` metadata, else the peer IP.
//!   With the `opentelemetry` feature an inbound `traceparent` is the span's
//!   parent.
//! * `grpc_cluster_server_requests_total{method,code}` and
//!   `grpc_cluster_server_request_duration_seconds{method}` when the response
//!   ends (the status read from the trailers, or the headers of a
//!   trailers-only response; a response dropped before its end counts as
//!   `CANCELLED`);
//! * `grpc_cluster_server_rate_limited_total{method,scope}` for a refusal of
//!   the rate limits, which name the limit in the response's extensions; the
//!   drain counter keeps `grpc_cluster_server_in_flight`.
//!
//! Handles are resolved once per method and registered with the recorder on
//! first use; at most 512 methods get a label of their own (later ones share
//! `other`), whatever paths clients send.

mod context;
mod layer;
mod metrics;

pub(crate) use layer::ObserveLayer;
