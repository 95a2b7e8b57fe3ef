//! The error type of cluster-client.

use std::sync::Arc;
use std::time::Duration;

/// Errors of the cluster client: nothing to pick, nothing matching a selector, bad
/// settings, a picker that is gone.
///
/// Variants are `#[non_exhaustive]`: they are built by the client and matched by
/// users (with `..`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry lists no node for the service (or none is left to pick).
    #[error("service `{service}` has no nodes in the registry")]
    #[non_exhaustive]
    NoNodes {
        /// The service.
        service: Arc<str>,
    },
    /// Every candidate node has weight 0, which weighted balancers never pick.
    #[error("every candidate node of service `{service}` has weight 0, which balancer `{balancer}` never picks")]
    #[non_exhaustive]
    NoWeight {
        /// The service.
        service: Arc<str>,
        /// The weighted balancer in force.
        balancer: crate::Balancer,
    },
    /// No node matches the selector, and the fallback is `strict` or the call
    /// is a broadcast (a fan-out never falls back to every node).
    #[error(
        "no node of service `{service}` matches selector `{selector}` ({}); \
         versions available: {}; groups available: {}",
        if *strict { "fallback strict" } else { "a broadcast goes to matching nodes only" },
        list_values(available_versions, "(unversioned)"),
        list_values(available_groups, "(no group)")
    )]
    #[non_exhaustive]
    NoMatch {
        /// The service.
        service: Arc<str>,
        /// The selector that matched nothing, as written.
        selector: String,
        /// Whether the `strict` fallback refused it (else: a broadcast).
        strict: bool,
        /// The distinct versions of the service's nodes, sorted.
        available_versions: Vec<String>,
        /// The distinct groups of the service's nodes, sorted.
        available_groups: Vec<String>,
    },
    /// Every candidate node was already tried by this call.
    #[error("every candidate node of service `{service}` was already tried by this call ({tried} excluded)")]
    #[non_exhaustive]
    AllExcluded {
        /// The service.
        service: Arc<str>,
        /// How many nodes the call excluded.
        tried: usize,
    },
    /// The registry did not deliver the service's node set in time.
    #[error(
        "service `{service}` was not discovered within {waited:?}: no node set from {}{}",
        match etcd {
            Some(endpoints) => format!("etcd at {endpoints} yet"),
            None => "the registry yet".to_owned(),
        },
        match (cause, etcd) {
            (Some(cause), _) => format!(" (last error: {cause})"),
            (None, Some(_)) => " (is it reachable?)".to_owned(),
            (None, None) => String::new(),
        }
    )]
    #[non_exhaustive]
    NotDiscovered {
        /// The service.
        service: Arc<str>,
        /// How long the pick waited.
        waited: Duration,
        /// The etcd endpoints the registry reads, comma-separated, when the
        /// client knows them (it connected to etcd itself).
        etcd: Option<Arc<str>>,
        /// The registry's last failure to read the service from etcd, in one
        /// line, when there was one.
        cause: Option<Arc<str>>,
    },
    /// The picker actor of the service has stopped.
    #[error("the picker of service `{service}` is gone: {source}")]
    #[non_exhaustive]
    PickerGone {
        /// The service.
        service: Arc<str>,
        /// The mailbox error of the send.
        #[source]
        source: actix::MailboxError,
    },
    /// A selector could not be parsed.
    #[error("invalid selector `{input}`: {reason}")]
    #[non_exhaustive]
    InvalidSelector {
        /// The selector text.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A method path is not `/package.Service/Method`.
    #[error("invalid method path `{0}`: expected /package.Service/Method")]
    BadMethod(String),
    /// A setting is invalid; names the key path
    /// (`client.services.echo.balancer: ...`).
    #[error("invalid configuration: {0}")]
    Config(#[from] registry_actor::config::InvalidValue),
    /// The registry could not be used (bad registry settings).
    #[error("registry: {0}")]
    Registry(#[source] std::sync::Arc<registry_actor::Error>),
    /// [`ClusterClient::spawn`](crate::ClusterClient::spawn) could not start
    /// the client's thread; says why.
    #[error("cannot start the cluster client's thread: {0}")]
    Spawn(String),
    /// The client was shut down
    /// ([`ClientHandle::shutdown`](crate::ClientHandle::shutdown)).
    #[error("the cluster client was shut down")]
    Stopped,
}

impl Error {
    pub(crate) fn picker_gone(service: impl Into<Arc<str>>, source: actix::MailboxError) -> Self {
        Self::PickerGone {
            service: service.into(),
            source,
        }
    }

    /// The gRPC code a call ends with when this error stops it: `UNAVAILABLE`
    /// when no node can take it now (none registered, none left to try, picker
    /// gone, none discovered yet, the client shut down); `FAILED_PRECONDITION` when a strict selector
    /// matches nothing or every candidate has weight 0; `INVALID_ARGUMENT` for
    /// bad input or settings; `INTERNAL` when the client's thread could not
    /// start.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::NoNodes { .. }
            | Self::AllExcluded { .. }
            | Self::PickerGone { .. }
            | Self::NotDiscovered { .. }
            | Self::Stopped => Code::Unavailable,
            Self::Spawn(_) => Code::Internal,
            Self::NoWeight { .. } | Self::NoMatch { .. } => Code::FailedPrecondition,
            Self::InvalidSelector { .. }
            | Self::BadMethod(_)
            | Self::Config(_)
            | Self::Registry(_) => Code::InvalidArgument,
        }
    }
}

impl From<registry_actor::Error> for Error {
    fn from(e: registry_actor::Error) -> Self {
        Self::Registry(std::sync::Arc::new(e))
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

fn list_values(values: &[String], empty: &str) -> String {
    if values.is_empty() {
        return "none".to_owned();
    }
    values
        .iter()
        .map(|v| {
            if v.is_empty() {
                empty.to_owned()
            } else {
                format!("`{v}`")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
