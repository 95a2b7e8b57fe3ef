//! The metric names every grpc-cluster crate records through the `metrics`
//! facade, and what their labels share.
//!
//! Names follow the Prometheus conventions; no label carries a node id except
//! the registration gauge's `node`. `method` is a gRPC path
//! (`/echo.v1.Echo/Say`), `code` the gRPC name of a status code
//! ([`code_name`]).
//!
//! | name | kind | labels |
//! |---|---|---|
//! | [`CLIENT_CALLS`] | counter | `service`, `method`, `code` |
//! | [`CLIENT_ATTEMPTS`] | counter | `service`, `method`, `code`, `kind` (`first`, `retry`, `hedge`, `fork`, `broadcast`) |
//! | [`CLIENT_CALL_DURATION`] | histogram (s) | `service`, `method` |
//! | [`CLIENT_BUDGET_EXHAUSTED`] | counter | `service` |
//! | [`CLIENT_THROTTLED`] | counter | `service` |
//! | [`CLIENT_NODES`] | gauge | `service`, `state` (`pickable`, `ejected`, `held`) |
//! | [`CLIENT_EJECTIONS`] | counter | `service` |
//! | [`SERVER_REQUESTS`] | counter | `method`, `code` |
//! | [`SERVER_REQUEST_DURATION`] | histogram (s) | `method` |
//! | [`SERVER_RATE_LIMITED`] | counter | `method`, `scope` (`global`, `method`, `caller`, `cluster`) |
//! | [`SERVER_SHED`] | counter | `method` |
//! | [`SERVER_IN_FLIGHT`] | gauge | |
//! | [`REGISTRATION_UP`] | gauge | `service`, `node` |
//! | [`REGISTRY_RECONNECTS`] | counter | `service` |
//! | [`REGISTRY_RESYNCS`] | counter | `service` |
//! | [`REGISTRY_DECODE_ERRORS`] | counter | `service` |

use tonic::Code;

/// Calls per service, method and final code.
pub const CLIENT_CALLS: &str = "grpc_cluster_client_calls_total";
/// Attempts per service, method, code and kind.
pub const CLIENT_ATTEMPTS: &str = "grpc_cluster_client_attempts_total";
/// Call latency per service and method, in seconds.
pub const CLIENT_CALL_DURATION: &str = "grpc_cluster_client_call_duration_seconds";
/// Extra attempts the retry budget refused, per service.
pub const CLIENT_BUDGET_EXHAUSTED: &str = "grpc_cluster_client_budget_exhausted_total";
/// Attempts per service the client's adaptive throttle refused locally.
pub const CLIENT_THROTTLED: &str = "grpc_cluster_client_throttled_total";
/// Nodes per service and state.
pub const CLIENT_NODES: &str = "grpc_cluster_client_nodes";
/// Ejections per service.
pub const CLIENT_EJECTIONS: &str = "grpc_cluster_client_ejections_total";
/// Requests a server answered, per method and code.
pub const SERVER_REQUESTS: &str = "grpc_cluster_server_requests_total";
/// Request latency per method, in seconds.
pub const SERVER_REQUEST_DURATION: &str = "grpc_cluster_server_request_duration_seconds";
/// Requests refused by a rate limit, per method and scope.
pub const SERVER_RATE_LIMITED: &str = "grpc_cluster_server_rate_limited_total";
/// Requests refused by adaptive load shedding, per method.
pub const SERVER_SHED: &str = "grpc_cluster_server_shed_total";
/// Requests a server is serving.
pub const SERVER_IN_FLIGHT: &str = "grpc_cluster_server_in_flight";
/// 1 while a node is registered, 0 otherwise.
pub const REGISTRATION_UP: &str = "grpc_cluster_registration_up";
/// Watch streams re-opened after a failure, per service.
pub const REGISTRY_RECONNECTS: &str = "grpc_cluster_registry_reconnects_total";
/// Full re-reads of a service's node set, per service.
pub const REGISTRY_RESYNCS: &str = "grpc_cluster_registry_resyncs_total";
/// Registry values skipped as invalid, per service.
pub const REGISTRY_DECODE_ERRORS: &str = "grpc_cluster_registry_decode_errors_total";

/// The upper bounds (seconds) of the latency histograms' buckets: 100 µs to
/// 10 s, about three per decade.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The gRPC name of `code` (`UNAVAILABLE`), as the `code` label says it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_grpc_name() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            let name = code_name(code);
            assert_eq!(
                name.replace('_', "").to_lowercase(),
                format!("{code:?}").to_lowercase(),
                "{n}"
            );
        }
    }
}
