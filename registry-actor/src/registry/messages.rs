//! Messages of the [`RegistryActor`](super::RegistryActor).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;

use crate::NodeSet;

/// Subscribes `recipient` to the node set of `service`.
///
/// The recipient gets the current snapshot at once when the service is already
/// watched, otherwise as soon as the first `get` from etcd succeeds; then every
/// change. Answers the id to [`Unsubscribe`] with.
#[derive(Debug, Message)]
#[rtype(result = "SubscriptionId")]
pub struct Subscribe {
    /// The service to watch.
    pub service: String,
    /// Where to send [`NodesChanged`].
    pub recipient: Recipient<NodesChanged>,
}

impl Subscribe {
    /// Subscribes `recipient` to `service`.
    pub fn new(service: impl Into<String>, recipient: Recipient<NodesChanged>) -> Self {
        Self {
            service: service.into(),
            recipient,
        }
    }
}

/// Identifies one subscription, to [`Unsubscribe`] it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(pub(crate) u64);

/// Ends a subscription. The service's watch is closed with its last subscriber.
/// Answers whether the subscription existed.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct Unsubscribe {
    /// The service subscribed to.
    pub service: String,
    /// The id [`Subscribe`] answered.
    pub id: SubscriptionId,
}

/// The node set of a service changed (or: the current set, on subscribing).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct NodesChanged {
    /// The service.
    pub service: Arc<str>,
    /// Every valid node of the service, sorted by id (the order of their
    /// keys). Consecutive sets of a watch share the chunks a change does not
    /// touch.
    pub nodes: NodeSet,
    /// The etcd revision this set reflects.
    pub revision: i64,
}

/// Asks for the last known set of a service, `None` when it is not watched or
/// its first `get` has not succeeded yet.
#[derive(Debug, Message)]
#[rtype(result = "Option<NodesChanged>")]
pub struct Snapshot {
    /// The service.
    pub service: String,
}

/// Asks how the watch of a service stands, `None` when it is not watched.
#[derive(Debug, Message)]
#[rtype(result = "Option<WatchStatus>")]
pub struct WatchState {
    /// The service.
    pub service: String,
}

/// How the watch of one service stands; the answer to [`WatchState`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchStatus {
    /// Nodes in the set in force (0 before any set).
    pub nodes: usize,
    /// Whether a set is in force: from etcd, or from the snapshot file.
    pub discovered: bool,
    /// When the set in force was read from the snapshot file
    /// (`registry.snapshot_file`), the time that file was written; `None`
    /// when the set came from etcd or there is none.
    pub snapshot_file_written: Option<SystemTime>,
    /// The last failure to read or watch the service in etcd, in one line,
    /// e.g. `etcd get /grpc-cluster/services/echo/ at 127.0.0.1:2379
    /// failed: connection refused`. It stays after etcd answers again.
    pub last_error: Option<Arc<str>>,
}

impl WatchStatus {
    /// How old the snapshot file serving the set is, when it serves it.
    pub fn snapshot_file_age(&self) -> Option<Duration> {
        let written = self.snapshot_file_written?;
        Some(
            SystemTime::now()
                .duration_since(written)
                .unwrap_or_default(),
        )
    }
}

/// Asks for the registry's counters.
#[derive(Debug, Message)]
#[rtype(result = "RegistryStats")]
pub struct Stats;

/// Counters of a [`RegistryActor`](super::RegistryActor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryStats {
    /// Services watched (with at least one subscriber).
    pub services: usize,
    /// Live subscriptions over all services.
    pub subscribers: usize,
    /// Valid nodes over all watched services.
    pub nodes: usize,
    /// Registry values skipped because they were not valid nodes.
    pub decode_errors: u64,
    /// Watch streams re-opened after an error or end.
    pub reconnects: u64,
    /// Full re-reads after a compaction overtook a watch.
    pub resyncs: u64,
    /// Full re-reads because etcd came back as another cluster or with an
    /// older revision than the last one seen.
    pub cluster_changes: u64,
    /// etcd watch streams open right now.
    pub watches_open: u64,
}
