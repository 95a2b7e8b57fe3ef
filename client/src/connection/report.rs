//! [`Report`]: how a connection tells its owner what the transport did, and
//! [`Outcomes`]: the counts of its attempts' outcomes.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a connection reports about its node's transport. The picker
/// implements it (bound to the node) to drive ejection; reports are rare
/// (failures, and the first success after one) and must not block.
pub(crate) trait Report: Send + Sync + 'static {
    /// A connection attempt failed, or the connection broke.
    fn failed(&self, reason: &str);
    /// The node answered (after a failure, or for the first time).
    fn succeeded(&self);
    /// The node's health service says it serves (`true`) or not; also `false`
    /// when the health watch's connection broke.
    fn serving(&self, serving: bool);
    /// The server is closing a connection to the node: it sent GOAWAY, or the
    /// connection ended.
    fn going_away(&self);
}

/// How many attempts on a node succeeded and failed (as ejection counts
/// them) since the counts were last taken; shared by the node's connections
/// and read by its picker for success-rate ejection.
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Outcomes {
    /// Counts one attempt.
    pub(crate) fn record(&self, success: bool) {
        let counter = if success {
            &self.succeeded
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The successes and failures counted since the last call, starting over.
    pub(crate) fn take(&self) -> (u64, u64) {
        (
            self.succeeded.swap(0, Ordering::Relaxed),
            self.failed.swap(0, Ordering::Relaxed),
        )
    }
}
