//! The error type of server-kit, and its one mapping to a gRPC [`Status`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use registry_actor::config::InvalidValue;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// The gRPC metadata key of a retry pushback, in milliseconds (gRFC A6).
pub const RETRY_PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";

/// Errors of the server kit: bad settings, a port that cannot be bound, a server
/// that failed, and the ways a call is refused (rate limited, shed,
/// unauthenticated).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid; names the full key path (`server.…`) and why.
    #[error("invalid configuration: {0}")]
    Config(#[from] InvalidValue),
    /// The listen address could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address from `server.listen`.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The registry could not be used (bad registry settings).
    #[error(transparent)]
    Registry(#[from] registry_actor::Error),
    /// The tonic server failed.
    #[error("the server failed: {0}")]
    Serve(#[source] Box<tonic::transport::Error>),
    /// The server task ended abnormally (it panicked or was aborted).
    #[error("the server task ended abnormally: {0}")]
    Task(String),
    /// [`ServeHandle::pause`](crate::ServeHandle::pause) or `resume` on a
    /// server that serves without a registry.
    #[error("the server is not registered in a registry (no registry, or an empty server.service): nothing to pause or resume")]
    NotRegistered,
    /// A call was refused by a rate limit.
    #[error("rate limited by the {limit} limit; retry in {} ms", pushback_ms(*.retry_after))]
    #[non_exhaustive]
    RateLimited {
        /// Which limit refused it.
        limit: Limit,
        /// governor's wait until the call would conform.
        retry_after: Duration,
    },
    /// A call was shed: the server had as many calls in flight as its
    /// adaptive limit allows (`[server.shedding]`).
    #[error("overloaded: {in_flight} calls in flight at a limit of {limit}; retry in {} ms", pushback_ms(*.retry_after))]
    #[non_exhaustive]
    Overloaded {
        /// The calls in flight when it arrived.
        in_flight: usize,
        /// The in-flight limit in force.
        limit: usize,
        /// How long a call in flight takes at least: the pushback.
        retry_after: Duration,
    },
    /// A call did not carry the configured bearer token.
    #[error("missing or wrong bearer token")]
    #[non_exhaustive]
    Unauthenticated,
}

impl Error {
    /// The value at `key` (full path) is wrong because `reason`.
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config(InvalidValue::new(key, reason))
    }

    pub(crate) fn rate_limited(limit: Limit, retry_after: Duration) -> Self {
        Self::RateLimited { limit, retry_after }
    }

    pub(crate) fn overloaded(in_flight: usize, limit: usize, retry_after: Duration) -> Self {
        Self::Overloaded {
            in_flight,
            limit,
            retry_after,
        }
    }
}

/// Which of the composable limits refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// `server.rate_limit.rps`.
    Global,
    /// `server.rate_limit.methods."/pkg.Svc/Method"`.
    Method,
    /// `server.rate_limit.caller_rps` (one caller's own quota).
    Caller,
    /// `server.rate_limit.cluster_rps` divided by the live instances.
    Cluster,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Global => "global",
            Self::Method => "per-method",
            Self::Caller => "per-caller",
            Self::Cluster => "cluster",
        })
    }
}

/// A wait as a pushback: whole milliseconds, rounded up, at least 1 (a pushback
/// of 0 would invite an immediate retry that the limiter refuses again).
pub(crate) fn pushback_ms(wait: Duration) -> u64 {
    let ms = wait.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

/// The one mapping of server-kit errors to gRPC statuses.
///
/// * `RateLimited`, `Overloaded` → `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`;
/// * `Unauthenticated` → `UNAUTHENTICATED`;
/// * `Config` → `INVALID_ARGUMENT`; `NotRegistered` → `FAILED_PRECONDITION`;
///   everything else → `UNAVAILABLE`/`INTERNAL`.
impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::RateLimited { retry_after, .. } | Error::Overloaded { retry_after, .. } => {
                let mut metadata = MetadataMap::new();
                metadata.insert(
                    RETRY_PUSHBACK_KEY,
                    MetadataValue::from(pushback_ms(retry_after)),
                );
                Status::with_metadata(Code::ResourceExhausted, message, metadata)
            }
            Error::Unauthenticated => Status::unauthenticated(message),
            Error::Config(_) => Status::invalid_argument(message),
            Error::NotRegistered => Status::failed_precondition(message),
            Error::Bind { .. } | Error::Serve(_) | Error::Registry(_) => {
                Status::unavailable(message)
            }
            Error::Task(_) => Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_maps_to_resource_exhausted_with_a_positive_pushback() {
        for (wait, ms) in [
            (Duration::ZERO, "1"),
            (Duration::from_nanos(1), "1"),
            (Duration::from_millis(10), "10"),
            (Duration::from_micros(10_001), "11"),
        ] {
            let status = Status::from(Error::rate_limited(Limit::Caller, wait));
            assert_eq!(status.code(), Code::ResourceExhausted);
            let pushback = status.metadata().get(RETRY_PUSHBACK_KEY).expect("pushback");
            assert_eq!(pushback.to_str().ok(), Some(ms), "{wait:?}");
            assert!(status.message().contains("per-caller"));
        }
    }
}
