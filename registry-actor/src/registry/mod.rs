//! Discovery: the actor that owns the watched node set of each service.
//!
//! [`RegistryActor`] keeps **one etcd watch per service**, however many
//! subscribers it has. A [`Subscribe`] gets the current snapshot at once (when the
//! service is already known) and then a [`NodesChanged`] for every change, each
//! with the etcd revision it reflects. Snapshots are immutable [`NodeSet`](crate::NodeSet)s,
//! sorted by id (the order of their keys); each shares with the one before
//! every chunk of nodes the change did not touch.
//!
//! The watch of a service:
//!
//! 1. a full read of the prefix `{prefix}/{service}/`, page by page at one
//!    revision `r` → the full set;
//! 2. watch from `r + 1` on one member (require-leader); every response updates
//!    the set and is published if the set changed. The watch asks its member for
//!    a progress report every 250 ms; a member silent for 1 s (frozen, cut off)
//!    is left like a failed one;
//! 3. a stream error, a silent member, or a member that lost its leader → the
//!    next member; re-watch from the last seen revision + 1 with capped backoff
//!    (counted in `reconnects`);
//! 4. before resuming, the cluster's identity is checked: a different cluster
//!    id, or a revision below the last one seen (a registry rebuilt, or restored
//!    from a backup), voids the set → full read and diff (counted in
//!    `cluster_changes`);
//! 5. a start revision that was compacted meanwhile → full read and diff
//!    (counted in `resyncs`).
//!
//! While etcd is unreachable the last known set stays in force: nothing is ever
//! emptied because the registry is down. With `registry.snapshot_file` set,
//! the actor also keeps each service's set in that file, and a service that
//! etcd cannot deliver at start-up is served from the file (logged with the
//! file's age, and shown by [`WatchState`]) until etcd answers. A value that is not a valid node is
//! skipped with a `warn!` naming the key and counted in `decode_errors` (so is
//! a value above `registry.max_value_bytes`); a key whose value turns invalid
//! leaves the set, the rest of the set is untouched.
//!
//! [`ServiceWatch`] is the same loop on its own, for a program that wants one
//! service's set without an actor.
//!
//! # Examples
//!
//! ```no_run
//! use actix::prelude::*;
//! use registry_actor::{NodesChanged, RegistryActor, RegistryConfig, Subscribe};
//!
//! struct Printer;
//! impl Actor for Printer {
//!     type Context = Context<Self>;
//! }
//! impl Handler<NodesChanged> for Printer {
//!     type Result = ();
//!     fn handle(&mut self, msg: NodesChanged, _: &mut Context<Self>) {
//!         println!("{} at revision {}: {} nodes", msg.service, msg.revision, msg.nodes.len());
//!     }
//! }
//!
//! # #[actix::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = RegistryConfig::default();
//! let registry = RegistryActor::new(registry_actor::connect(&config).await?, &config).start();
//! let printer = Printer.start();
//! registry.send(Subscribe::new("echo", printer.recipient())).await?;
//! # Ok(()) }
//! ```

mod actor;
mod messages;
mod snapshot_file;
mod watch;

pub use actor::RegistryActor;
pub use messages::{
    NodesChanged, RegistryStats, Snapshot, Stats, Subscribe, SubscriptionId, Unsubscribe,
};
pub use messages::{WatchState, WatchStatus};
pub use watch::ServiceWatch;
