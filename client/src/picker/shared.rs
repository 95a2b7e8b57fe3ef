//! The picker state calls read without a message.
//!
//! A [`PickerActor`](super::PickerActor) keeps its [`Picker`] and the
//! connections of the nodes picked so far in a [`SharedPicker`]. Calls lock it
//! for the length of one pick (tens of nanoseconds), so a pick costs no
//! mailbox round trip and no task hand-off. The actor still owns every change:
//! node sets, ejections, timers, reconfiguration and the connection actors. A
//! pick that needs the actor — before the first node set arrives, or for a
//! node that has no connection yet — falls back to a message.

use parking_lot::Mutex;

use super::state::{NodeHandle, Picked, Picker};
use crate::{Connection, Error, HashKey, Selector};

/// A picker and the connections of its nodes, shared by the actor and the
/// calls of its service.
pub(crate) struct SharedPicker {
    inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    pub(crate) picker: Picker,
    /// The connection of every node picked so far and still in force (looked
    /// up on every pick: a fast hash of the picker's own handles).
    pub(crate) connections: foldhash::HashMap<NodeHandle, Connection>,
}

/// What a pick without a message came to.
pub(crate) enum Fast<T> {
    /// The answer, as the actor would have given it.
    Done(Result<T, Error>),
    /// Picked, but at least one node has no connection yet: the actor must
    /// attach one (it starts the node's connection actor).
    Attach(T),
    /// No node set yet: the actor waits for it (up to the discovery timeout).
    Wait,
}

impl SharedPicker {
    pub(crate) fn new(picker: Picker) -> Self {
        Self {
            inner: Mutex::new(Inner {
                picker,
                connections: foldhash::HashMap::default(),
            }),
        }
    }

    /// Locks the state. Never held across an `.await`.
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Picks one node, with its connection when the node has one.
    pub(crate) fn pick(
        &self,
        selector: Option<&Selector>,
        exclude: &[NodeHandle],
        hash_key: Option<HashKey>,
    ) -> Fast<Picked> {
        let mut inner = self.lock();
        if !inner.picker.is_discovered() {
            return Fast::Wait;
        }
        let mut picked = match inner.picker.pick(selector, exclude, hash_key) {
            Ok(p) => p,
            Err(e) => return Fast::Done(Err(e)),
        };
        match inner.connections.get(&picked.handle()) {
            Some(connection) => {
                picked.set_connection(connection.clone());
                Fast::Done(Ok(picked))
            }
            None => Fast::Attach(picked),
        }
    }

    /// Every node matching `selector`, with their connections when they all
    /// have one.
    pub(crate) fn pick_all(&self, selector: Option<&Selector>) -> Fast<Vec<Picked>> {
        let mut inner = self.lock();
        if !inner.picker.is_discovered() {
            return Fast::Wait;
        }
        let mut all = match inner.picker.pick_all(selector) {
            Ok(all) => all,
            Err(e) => return Fast::Done(Err(e)),
        };
        let mut complete = true;
        for picked in &mut all {
            match inner.connections.get(&picked.handle()) {
                Some(connection) => picked.set_connection(connection.clone()),
                None => complete = false,
            }
        }
        if complete {
            Fast::Done(Ok(all))
        } else {
            Fast::Attach(all)
        }
    }

    /// Records the calls in flight on `node` (for `least_request`).
    pub(crate) fn report_load(&self, node: NodeHandle, in_flight: u32) {
        self.lock().picker.report_load(node, in_flight);
    }
}

impl std::fmt::Debug for SharedPicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("SharedPicker")
            .field("picker", &inner.picker)
            .field("connections", &inner.connections.len())
            .finish()
    }
}
