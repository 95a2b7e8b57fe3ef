//! The error type of registry-actor, and the one-line causes its messages
//! give.

use std::path::PathBuf;
use std::time::Duration;

/// Errors of the registry: etcd unreachable or refusing, bad settings, bad values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// etcd answered with an error or could not be reached. The message gives
    /// the cause in one short line (`connection refused`, `Unavailable:
    /// etcdserver: no leader`), and names `registry.tls` when the TLS handshake
    /// failed; the etcd client's error stays the `source`.
    #[error("etcd {op} failed: {}{}", cause(source), tls_hint(source))]
    Etcd {
        /// What was being done (`grant lease`, `put /grpc-cluster/...`, ...).
        op: String,
        /// The etcd client's error.
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// etcd did not answer in time.
    #[error("etcd {op} timed out after {timeout:?}")]
    Timeout {
        /// What was being done.
        op: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// A setting is invalid; names the key.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::InvalidValue),
    /// A node value is invalid.
    #[error(transparent)]
    Decode(#[from] crate::DecodeError),
    /// A registration was lost (lease expired, stream ended, no keepalive answer).
    #[error("registration lost: {0}")]
    RegistrationLost(String),
    /// A watch stream ended or was canceled by etcd.
    #[error("watch lost: {0}")]
    WatchLost(String),
    /// The registrar's background task is gone (its runtime stopped).
    #[error("the registrar task has stopped")]
    RegistrarStopped,
    /// The snapshot file (`registry.snapshot_file`) cannot be read or written,
    /// or is not a snapshot file of this registry.
    #[error("snapshot file {}: {reason}", path.display())]
    SnapshotFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn etcd(op: impl Into<String>, source: etcd_client::Error) -> Self {
        Self::Etcd {
            op: op.into(),
            source: Box::new(source),
        }
    }

    /// The same error, naming the etcd member `endpoint` it came from.
    pub(crate) fn at(self, endpoint: &str) -> Self {
        match self {
            Self::Etcd { op, source } => Self::Etcd {
                op: format!("{op} at {endpoint}"),
                source,
            },
            Self::Timeout { op, timeout } => Self::Timeout {
                op: format!("{op} at {endpoint}"),
                timeout,
            },
            other => other,
        }
    }
}

/// The longest cause text kept from a remote message.
const CAUSE_CHARS: usize = 160;

/// What went wrong in one short line: the root I/O error when there is one
/// (`connection refused`), else the gRPC code and message etcd sent, never
/// the etcd client's `Debug` dump of the whole chain.
pub(crate) fn cause(error: &etcd_client::Error) -> String {
    use etcd_client::Error as E;
    use std::error::Error as _;
    let (head, chain) = match error {
        E::GRpcStatus(status) => {
            let head = if status.message().is_empty() {
                format!("{:?}", status.code())
            } else {
                format!("{:?}: {}", status.code(), status.message())
            };
            (head, status.source())
        }
        E::TransportError(e) => ("transport error".to_owned(), e.source()),
        E::IoError(e) => return io_cause(e),
        other => return shorten(&other.to_string()),
    };
    let mut next = chain;
    let mut root = None;
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io_cause(io);
        }
        root = Some(e);
        next = e.source();
    }
    match root {
        Some(root) => shorten(&format!("{head}: {root}")),
        None => shorten(&head),
    }
}

fn io_cause(error: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match error.kind() {
        K::ConnectionRefused => "connection refused".to_owned(),
        K::ConnectionReset => "connection reset".to_owned(),
        K::ConnectionAborted => "connection aborted".to_owned(),
        K::TimedOut => "connection timed out".to_owned(),
        K::NotConnected => "not connected".to_owned(),
        K::AddrNotAvailable => "address not available".to_owned(),
        _ => shorten(&error.to_string()),
    }
}

/// The first line of `text`, at most [`CAUSE_CHARS`] characters.
fn shorten(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(CAUSE_CHARS) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_owned(),
    }
}

/// A hint naming `registry.tls` when `error` is a failed TLS handshake: the
/// transport's source chain holds the I/O error of kind `InvalidData` that
/// rustls reports for a certificate it does not trust, a certificate the peer
/// refused or a peer that does not speak TLS.
fn tls_hint(error: &etcd_client::Error) -> &'static str {
    // etcd-client's error has no `source`: start from the error it wraps.
    let mut source: Option<&(dyn std::error::Error + 'static)> = match error {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        etcd_client::Error::TransportError(transport) => Some(transport),
        etcd_client::Error::IoError(io) => Some(io),
        _ => None,
    };
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::InvalidData {
                return "; the TLS handshake with etcd failed: check registry.tls \
                        (ca_file must hold the CA that signed etcd's certificate; \
                        cert_file and key_file a client certificate etcd trusts)";
            }
        }
        source = err.source();
    }
    ""
}

/// Runs one etcd request with a timeout, naming the operation in any error.
pub(crate) async fn with_timeout<T, F>(op: &str, timeout: Duration, fut: F) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::etcd(op, e)),
        Err(_) => Err(Error::Timeout {
            op: op.to_owned(),
            timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd_error(status: tonic::Status) -> Error {
        Error::etcd(
            "get /grpc-cluster/services/echo/",
            etcd_client::Error::GRpcStatus(status),
        )
        .at("10.0.0.1:2379")
    }

    #[test]
    fn an_etcd_status_reads_as_its_code_and_message_on_one_line() {
        let err = etcd_error(tonic::Status::unavailable("etcdserver: no leader"));
        assert_eq!(
            err.to_string(),
            "etcd get /grpc-cluster/services/echo/ at 10.0.0.1:2379 failed: Unavailable: etcdserver: no leader"
        );
    }

    #[test]
    fn a_transport_failure_reads_as_its_root_io_error() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let mut status = tonic::Status::unavailable("tcp connect error");
        status.set_source(std::sync::Arc::new(refused));
        assert_eq!(
            etcd_error(status).to_string(),
            "etcd get /grpc-cluster/services/echo/ at 10.0.0.1:2379 failed: connection refused"
        );
    }

    #[test]
    fn a_long_or_multi_line_cause_is_cut_to_one_short_line() {
        let long = format!("{}\nsecond line", "x".repeat(1000));
        let text = etcd_error(tonic::Status::internal(long)).to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.ends_with('…') && text.chars().count() < 260, "{text}");
    }
}
