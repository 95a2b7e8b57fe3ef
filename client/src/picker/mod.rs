//! Picking: one [`PickerActor`] per service, over the pure [`Picker`].
//!
//! The actor subscribes to the [`RegistryActor`](registry_actor::RegistryActor)
//! for its service. Each [`NodesChanged`](registry_actor::NodesChanged) is put
//! through the panic threshold and becomes the node set in force; the picker
//! then builds an immutable snapshot of it — the candidate pool of the
//! service's selector (and of every call selector in use) with its balancer —
//! beside the one in force, and publishes it whole. Calls read the published
//! snapshot without a lock or a message: a pick steps the balancer over the
//! prebuilt candidates, skipping the nodes the call excludes, and answers a
//! [`Picked`]: the node, its stable [`NodeHandle`] and the node's
//! [`Connection`](crate::Connection). [`PickAll`] answers every matching node.
//!
//! Only a call made before the first node set, or one that picks a node whose
//! connection does not exist yet, sends the actor a message ([`Pick`],
//! [`PickAll`]). Every change stays with the actor.
//!
//! Connections count their calls in flight in the node's slot of the snapshot
//! (`least_request` reads it) and report [`ConnectionFailed`] /
//! [`ConnectionSucceeded`] (for ejection and for releasing nodes held by the
//! panic threshold). A call whose node answers with a positive retry pushback
//! sends [`PushedBack`]: the node is not picked until the pushback has passed.
//! With `health_check`, the actor watches the `grpc.health.v1` status of each
//! node it has connected to, on the node's channel ([`HealthChanged`]): a node
//! whose server says it does not serve (as a server kit does first thing when
//! it shuts down), or whose watch's connection broke, is not picked until the
//! server says it serves again, whatever etcd says meanwhile. A node whose
//! server is closing a connection to it ([`GoingAway`]: its GOAWAY, or the
//! connection's end) is not picked until its server answers a health check
//! on a fresh connection; the actor tries one after 50 ms, then ever less
//! often, up to every second. With success-rate ejection, the actor compares
//! the nodes' success rates every interval and ejects the outliers.
//! Ejections and pushbacks end, and held nodes' grace passes, on timers of
//! the actor. Whenever a node leaves the set in force — the registry dropped
//! it, its hold ended, it failed while held — its connection is closed.
//!
//! A pick that arrives before the first node set waits for it, up to the
//! discovery timeout, then fails with [`Error::NotDiscovered`](crate::Error).

mod actor;
mod carry;
mod entries;
mod messages;
mod picked;
mod shared;
mod snapshot;
mod state;
mod status;
mod view;

#[cfg(test)]
mod tests;

pub use actor::PickerActor;
pub(crate) use actor::{Attach, WaitDiscovered, WaitNodes};
pub use messages::{
    ConnectionFailed, ConnectionSucceeded, GoingAway, HealthChanged, Inspect, Pick, PickAll,
    PushedBack, Reconfigure,
};
pub use picked::{NodeHandle, NodeRef, Picked};
pub(crate) use shared::{Fast, SharedPicker};
pub use state::Picker;
pub use status::{NodeStatus, PickerStatus};
pub use view::PickerView;
