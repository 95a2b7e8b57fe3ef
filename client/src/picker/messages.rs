//! Messages of the [`PickerActor`](super::PickerActor).
//!
//! Calls ask with [`Pick`] and [`PickAll`] when they cannot pick from the
//! published snapshot alone. Connections (one per node, keyed by
//! [`NodeHandle`]) report with [`ConnectionFailed`] and [`ConnectionSucceeded`],
//! [`GoingAway`], and their health watches with [`HealthChanged`];
//! these answer `()` and may be sent with `do_send` (a lost report only delays
//! an ejection).
//! [`Inspect`] reads the state. The registry feeds the actor with
//! [`NodesChanged`](registry_actor::NodesChanged).

use actix::prelude::*;

use super::picked::{NodeHandle, Picked};
use super::status::PickerStatus;
use crate::{Error, HashKey, Selector};

/// Picks one node for a call. Answers the node and its [`NodeHandle`].
///
/// # Examples
///
/// ```
/// use cluster_client::{HashKey, Pick, Selector};
///
/// let retry = Pick::new()
///     .with_selector(Selector::new().with_group("blue"))
///     .with_hash_key(HashKey::of("user-42"));
/// assert!(retry.exclude.is_empty());
/// ```
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "Result<Picked, Error>")]
pub struct Pick {
    /// The call's selector, merged over the service's; `None`: the service's.
    pub selector: Option<Selector>,
    /// Nodes this call already tried; never picked again by it.
    pub exclude: Vec<NodeHandle>,
    /// The key for `consistent_hash`.
    pub hash_key: Option<HashKey>,
}

impl Pick {
    /// A pick with the service's selector, nothing excluded, no hash key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `selector` (merged over the service's).
    pub fn with_selector(mut self, selector: Selector) -> Self {
        self.selector = Some(selector);
        self
    }

    /// Excludes nodes already tried.
    pub fn excluding(mut self, nodes: impl IntoIterator<Item = NodeHandle>) -> Self {
        self.exclude.extend(nodes);
        self
    }

    /// Sets the consistent-hash key.
    pub fn with_hash_key(mut self, key: HashKey) -> Self {
        self.hash_key = Some(key);
        self
    }
}

/// Every node matching a selector (for broadcast and multicast): the matching
/// nodes that are not ejected, or all matching ones when every one is.
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "Result<Vec<Picked>, Error>")]
pub struct PickAll {
    /// The call's selector, merged over the service's; `None`: the service's.
    pub selector: Option<Selector>,
}

impl PickAll {
    /// Every node matching the service's selector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `selector` (merged over the service's).
    pub fn with_selector(mut self, selector: Selector) -> Self {
        self.selector = Some(selector);
        self
    }
}

/// A node failed: a connection to it could not be made or broke (refused,
/// timed out, TLS, ...), an attempt outlived its attempt timeout, or the node
/// answered with one of the ejection codes.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ConnectionFailed {
    /// The node.
    pub node: NodeHandle,
    /// What happened, for the log.
    pub reason: String,
}

impl ConnectionFailed {
    /// A failure of `node` for `reason`.
    pub fn new(node: NodeHandle, reason: impl Into<String>) -> Self {
        Self {
            node,
            reason: reason.into(),
        }
    }
}

/// A node answered with a positive retry pushback: it is not picked until
/// `wait` has passed (without counting as a failure).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct PushedBack {
    /// The node.
    pub node: NodeHandle,
    /// How long it asked not to be called.
    pub wait: std::time::Duration,
}

/// What a node's health service says (with `health_check`): a node that does
/// not serve, or whose health watch's connection broke, is not picked until it
/// serves again.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct HealthChanged {
    /// The node.
    pub node: NodeHandle,
    /// Whether it serves.
    pub serving: bool,
}

/// A node's server is closing a connection to it: it sent GOAWAY, or the
/// connection ended. The node is not picked until its server answers on a
/// fresh connection.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct GoingAway {
    /// The node.
    pub node: NodeHandle,
}

/// A connection attempt to a node succeeded (resets its failure count).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ConnectionSucceeded {
    /// The node.
    pub node: NodeHandle,
}

/// Asks for the state of every node.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "PickerStatus")]
pub struct Inspect;

/// New settings for the picker (a configuration reload): balancer, selector
/// and fallback apply from the next pick; nodes keep their handles and health.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub crate::PickerConfig);
