//! How a failed attempt is classified: a transport failure (counted towards
//! ejection, and retried as `UNAVAILABLE`) or the node's own answer. Decided
//! from the error's source chain, never from its message.

use tonic::{Code, Status};

use super::tls::HandshakeFailed;

/// Whether a failed attempt failed in the transport: the node refused, reset or
/// dropped the connection, was unreachable, did not accept it within the
/// connect timeout, or failed the TLS handshake. Decided from the error's
/// source chain, never its message.
pub(crate) fn is_connection_failure(status: &Status) -> bool {
    if !matches!(status.code(), Code::Unavailable | Code::Unknown) {
        return false;
    }
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<HandshakeFailed>())
            {
                return true;
            }
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | AddrNotAvailable
                    | TimedOut
                    | HostUnreachable
                    | NetworkUnreachable
                    | BrokenPipe
            ) {
                return true;
            }
        }
        if err.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether a transport's error is in the source chain of `status`: tonic's
/// channel's or hyper's, or a node channel's (an HTTP/2 error, or the I/O
/// error its connection failed with). A status a server sent has none.
pub(crate) fn has_transport_source(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>()
            || err.is::<hyper::Error>()
            || err.is::<h2::Error>()
            || err.is::<std::io::Error>()
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether the channel ended the call itself because its `grpc-timeout`
/// passed: the caller's deadline, not a failure of the transport.
pub(crate) fn is_own_timeout(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether the transport failed (could not connect, or the connection broke),
/// as opposed to the node answering with an error status.
pub(crate) fn is_transport_failure(status: &Status) -> bool {
    is_connection_failure(status)
        || (matches!(
            status.code(),
            Code::Unknown | Code::Cancelled | Code::Unavailable
        ) && has_transport_source(status))
}

/// A call the transport broke (the connection closed or reset mid-call, a
/// server killed) reaches tonic as `UNKNOWN` "transport error", or as
/// `CANCELLED` "operation was canceled" when the connection went away before
/// the answer. gRPC calls a broken transport `UNAVAILABLE`, which strategies may
/// retry. Recognised from the source chain (a transport's error), never
/// the message: a status a server sent has no such source.
pub(crate) fn transport_as_unavailable(status: Status, addr: &str) -> Status {
    let code = status.code();
    if !matches!(code, Code::Unknown | Code::Cancelled) || !has_transport_source(&status) {
        return status;
    }
    Status::unavailable(format!("connection to {addr} broke: {}", status.message()))
}
