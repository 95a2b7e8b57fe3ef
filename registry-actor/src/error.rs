//! The error type of registry-actor.

use std::time::Duration;

/// Errors of the registry: etcd unreachable or refusing, bad settings, bad values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// etcd answered with an error or could not be reached. When the TLS
    /// handshake failed, the message says so and names `registry.tls`.
    #[error("etcd {op} failed: {source}{}", tls_hint(source))]
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
}

impl Error {
    pub(crate) fn etcd(op: impl Into<String>, source: etcd_client::Error) -> Self {
        Self::Etcd {
            op: op.into(),
            source: Box::new(source),
        }
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
