//! The picker state calls read without a lock or a message.
//!
//! A [`PickerActor`](super::PickerActor) publishes each [`Snapshot`] it builds
//! into the service's [`SharedPicker`]; calls load the one in force (an atomic
//! pointer read) and pick from it with the calling thread's random generator.
//! A rebuild happens beside the published snapshot and replaces it whole, so a
//! pick never waits for one. A pick that needs the actor — before the first
//! node set arrives, or for a node that has no connection yet — falls back to a
//! message.

use std::cell::RefCell;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::picked::{NodeHandle, Picked};
use super::snapshot::Snapshot;
use crate::{Error, HashKey, Selector};

/// The snapshot in force of one service, shared by its actor and its calls.
pub(crate) struct SharedPicker {
    current: ArcSwap<Snapshot>,
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

thread_local! {
    // A fast generator per thread, seeded from the OS-seeded one: picks need
    // spread, not unpredictability.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// Runs `f` with this thread's random generator.
fn with_rng<T>(f: impl FnOnce(&mut SmallRng) -> T) -> T {
    RNG.with(|rng| f(&mut rng.borrow_mut()))
}

impl SharedPicker {
    pub(crate) fn new(snapshot: Arc<Snapshot>) -> Self {
        Self {
            current: ArcSwap::new(snapshot),
        }
    }

    /// The service.
    pub(crate) fn service(&self) -> Arc<str> {
        self.current.load().service().clone()
    }

    /// Makes `snapshot` the one calls pick from.
    pub(crate) fn publish(&self, snapshot: Arc<Snapshot>) {
        self.current.store(snapshot);
    }

    /// Picks one node, with its connection on the runtime `home` when the node
    /// has one there.
    pub(crate) fn pick(
        &self,
        selector: Option<&Selector>,
        exclude: &[NodeHandle],
        hash_key: Option<HashKey>,
        home: Option<tokio::runtime::Id>,
    ) -> Fast<Picked> {
        let snapshot = self.current.load();
        if !snapshot.is_discovered() {
            return Fast::Wait;
        }
        match with_rng(|rng| snapshot.pick(selector, exclude, hash_key, home, rng)) {
            Ok(picked) if picked.connection().is_some() => Fast::Done(Ok(picked)),
            Ok(picked) => Fast::Attach(picked),
            Err(e) => Fast::Done(Err(e)),
        }
    }

    /// Every node matching `selector`, with their connections on the runtime
    /// `home` when they all have one there.
    pub(crate) fn pick_all(
        &self,
        selector: Option<&Selector>,
        home: Option<tokio::runtime::Id>,
    ) -> Fast<Vec<Picked>> {
        let snapshot = self.current.load();
        if !snapshot.is_discovered() {
            return Fast::Wait;
        }
        match with_rng(|rng| snapshot.pick_all(selector, home, rng)) {
            Ok(all) if all.iter().all(|p| p.connection().is_some()) => Fast::Done(Ok(all)),
            Ok(all) => Fast::Attach(all),
            Err(e) => Fast::Done(Err(e)),
        }
    }
}

#[cfg(test)]
impl SharedPicker {
    /// Sets the calls in flight on `node`, as its connection's counter does.
    pub(crate) fn set_load(&self, node: NodeHandle, in_flight: u32) {
        if let Some(slot) = self.current.load().slot(node) {
            slot.set_load(in_flight);
        }
    }
}

impl std::fmt::Debug for SharedPicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPicker")
            .field("snapshot", &*self.current.load())
            .finish()
    }
}
