//! What a pick hands out: [`Picked`], the node's [`NodeRef`] and [`NodeHandle`].

use std::fmt;
use std::sync::Arc;

use registry_actor::Node;

/// A stable handle of one node of a picker: the same while the node keeps its id
/// and address, never reused for another node. Connection actors are keyed by it,
/// and report back with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeHandle(pub(crate) u64);

impl NodeHandle {
    /// The handle as a number (unique within its picker).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A node of a picker's snapshot, shared rather than copied: cloning it costs
/// one reference count. Dereferences to the [`Node`].
#[derive(Clone)]
pub struct NodeRef {
    /// The chunk of the snapshot's node set the node is in.
    chunk: Arc<[Node]>,
    index: usize,
}

impl NodeRef {
    /// The node at `index` of `chunk`, which must be in range.
    pub(crate) fn new(chunk: Arc<[Node]>, index: usize) -> Self {
        debug_assert!(index < chunk.len());
        Self { chunk, index }
    }

    /// The node (also reachable through `*`).
    pub fn node(&self) -> &Node {
        &self.chunk[self.index]
    }
}

impl std::ops::Deref for NodeRef {
    type Target = Node;

    fn deref(&self) -> &Node {
        self.node()
    }
}

impl PartialEq for NodeRef {
    fn eq(&self, other: &Self) -> bool {
        self.node() == other.node()
    }
}

impl Eq for NodeRef {}

impl fmt::Debug for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.node(), f)
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.node(), f)
    }
}

impl From<Node> for NodeRef {
    fn from(node: Node) -> Self {
        Self {
            chunk: Arc::from(vec![node]),
            index: 0,
        }
    }
}

/// One picked node: the node, its stable handle, and the snapshot it came from.
///
/// Cheap to make and to clone: it shares the picker's immutable snapshot.
#[derive(Clone)]
pub struct Picked {
    node: NodeRef,
    handle: NodeHandle,
    revision: i64,
    connection: Option<crate::Connection>,
}

impl Picked {
    /// The node.
    pub fn node(&self) -> &Node {
        self.node.node()
    }

    /// The node, shared with the snapshot it was picked from.
    pub fn node_ref(&self) -> &NodeRef {
        &self.node
    }

    /// The node's stable handle.
    pub fn handle(&self) -> NodeHandle {
        self.handle
    }

    /// The registry revision of the snapshot the node was picked from.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The node's connection, owned by its connection actor. Set on every answer
    /// of a [`PickerActor`](crate::PickerActor) (unless the node's address cannot
    /// be used); `None` from a bare [`Picker`].
    pub fn connection(&self) -> Option<&crate::Connection> {
        self.connection.as_ref()
    }

    /// The node, shared with the snapshot, without the rest.
    pub(crate) fn into_node_ref(self) -> NodeRef {
        self.node
    }

    /// The connection, taken out (an attempt runs on it).
    pub(crate) fn take_connection(&mut self) -> Option<crate::Connection> {
        self.connection.take()
    }

    pub(crate) fn set_connection(&mut self, connection: crate::Connection) {
        self.connection = Some(connection);
    }

    pub(crate) fn new(
        node: NodeRef,
        handle: NodeHandle,
        revision: i64,
        connection: Option<crate::Connection>,
    ) -> Self {
        Self {
            node,
            handle,
            revision,
            connection,
        }
    }
}

impl fmt::Debug for Picked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picked")
            .field("node", self.node())
            .field("handle", &self.handle)
            .field("revision", &self.revision)
            .finish()
    }
}
