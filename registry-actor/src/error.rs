//! The error type of registry-actor.

use std::time::Duration;

/// Errors of the registry: etcd unreachable or refusing, bad settings, bad values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// etcd answered with an error or could not be reached.
    #[error("etcd {op} failed: {source}")]
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
