//! [`PickerStatus`]: what a picker knows of its nodes.

use std::sync::Arc;

use super::picked::NodeHandle;

/// What a picker knows of its nodes, for health pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PickerStatus {
    /// The service.
    pub service: Arc<str>,
    /// Whether a node set has arrived from the registry.
    pub discovered: bool,
    /// The registry revision of the last node set.
    pub revision: i64,
    /// How many nodes the registry lists (those `client.allowed_networks`
    /// refuses left out).
    pub listed: usize,
    /// Every node in force (listed, or held by the panic threshold), by id.
    pub nodes: Vec<NodeStatus>,
    /// Connections open to nodes of this service (one per node picked and still
    /// in force).
    pub connections: usize,
    /// How many nodes the registry lists that `client.allowed_networks`
    /// refuses: never picked, never dialled.
    pub refused: usize,
}

impl PickerStatus {
    /// The status of the node with this id.
    pub fn node(&self, id: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// How many nodes are ejected.
    pub fn ejected(&self) -> usize {
        self.nodes.iter().filter(|n| n.ejected).count()
    }

    /// How many nodes are held by the panic threshold.
    pub fn held(&self) -> usize {
        self.nodes.iter().filter(|n| n.held).count()
    }
}

/// One node of a [`PickerStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node id.
    pub id: String,
    /// The node address.
    pub addr: String,
    /// Its stable handle.
    pub handle: NodeHandle,
    /// Calls in flight, as last reported.
    pub in_flight: u32,
    /// Consecutive connection failures.
    pub consecutive_failures: u32,
    /// Whether it is ejected now.
    pub ejected: bool,
    /// Whether its retry pushback keeps it out of picking now.
    pub paused: bool,
    /// Whether its server's health service says it does not serve (with
    /// `health_check`), which keeps it out of picking.
    pub unhealthy: bool,
    /// Whether its server is closing its connection (GOAWAY) and no fresh
    /// connection has worked since, which keeps it out of picking.
    pub going_away: bool,
    /// How many times it was ejected.
    pub ejections: u32,
    /// Whether the registry dropped it and the panic threshold holds it.
    pub held: bool,
}
