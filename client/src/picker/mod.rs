//! Picking: one [`PickerActor`] per service, over the pure [`Picker`].
//!
//! The actor subscribes to the [`RegistryActor`](registry_actor::RegistryActor)
//! for its service. Each [`NodesChanged`](registry_actor::NodesChanged) is put
//! through the panic threshold and becomes the immutable snapshot in force; the
//! candidate list of the service's selector (and of every call selector seen, up
//! to 64) and its balancer are built then, never per pick. A [`Pick`] steps the
//! balancer over the prebuilt candidates, skipping the nodes the call excludes,
//! and answers a [`Picked`]: the node, its stable [`NodeHandle`] and the node's
//! [`Connection`](crate::Connection). [`PickAll`] answers every matching node.
//!
//! The actor keeps the [`Picker`] and the nodes' connections in a state shared
//! with the calls of its service ([`ClusterClient`](crate::ClusterClient) and
//! [`ClientHandle`](crate::ClientHandle)): a call picks by locking it for the
//! length of one pick, with no message and no task hand-off. Only a call made
//! before the first node set, or one that picks a node whose connection does not
//! exist yet, sends the actor a message. Every change stays with the actor.
//!
//! Connections report back: calls in flight (for `least_request`, written to
//! the shared state; [`ReportLoad`] does the same by message),
//! [`ConnectionFailed`] / [`ConnectionSucceeded`] (for ejection and for
//! releasing nodes held by the panic threshold). Ejections end, and held nodes'
//! grace passes, on timers of the actor.
//!
//! A pick that arrives before the first node set waits for it, up to the
//! discovery timeout, then fails with [`Error::NotDiscovered`](crate::Error).

mod actor;
mod messages;
mod shared;
mod state;

#[cfg(test)]
mod tests;

pub(crate) use actor::Attach;
pub use actor::PickerActor;
pub use messages::{
    ConnectionFailed, ConnectionSucceeded, Inspect, Pick, PickAll, Reconfigure, ReportLoad,
};
pub(crate) use shared::{Fast, SharedPicker};
pub use state::{NodeHandle, NodeRef, NodeStatus, Picked, Picker, PickerStatus};
