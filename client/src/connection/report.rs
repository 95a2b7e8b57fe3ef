//! [`Report`]: how a connection tells its owner what the transport did.

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
}
