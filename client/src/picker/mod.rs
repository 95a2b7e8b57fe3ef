//! Picking: one [`PickerActor`] per service, over the pure [`Picker`].
//!
//! The actor subscribes to the [`RegistryActor`](registry_actor::RegistryActor)
//! for its service. Each [`NodesChanged`](registry_actor::NodesChanged) is put
//! through the panic threshold and becomes the immutable snapshot in force; the
//! candidate list of the service's selector (and of every call selector seen, up
//! to 64) and its balancer are built then, never per pick. A [`Pick`] steps the
//! balancer over the prebuilt candidates, skipping the nodes the call excludes,
//! and answers a [`Picked`]: the node and its stable [`NodeHandle`], by which the
//! call actor finds the node's connection actor. [`PickAll`] answers every
//! matching node.
//!
//! Connection actors report back: [`ReportLoad`] (calls in flight, for
//! `least_request`), [`ConnectionFailed`] / [`ConnectionSucceeded`] (for ejection
//! and for releasing nodes held by the panic threshold). Ejections end, and held
//! nodes' grace passes, on timers of the actor.
//!
//! A pick that arrives before the first node set waits for it, up to the
//! discovery timeout, then fails with [`Error::NotDiscovered`](crate::Error).

mod actor;
mod messages;
mod state;

#[cfg(test)]
mod tests;

pub use actor::PickerActor;
pub use messages::{
    ConnectionFailed, ConnectionSucceeded, Inspect, Pick, PickAll, Reconfigure, ReportLoad,
};
pub use state::{NodeHandle, NodeStatus, Picked, Picker, PickerStatus};
