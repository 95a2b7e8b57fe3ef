//! Discovery: the actor that owns the watched node set of each service.
//!
//! [`RegistryActor`] keeps **one etcd watch per service**, however many
//! subscribers it has. A [`Subscribe`] gets the current snapshot at once (when the
//! service is already known) and then a [`NodesChanged`] for every change, each
//! with the etcd revision it reflects. Snapshots are immutable `Arc<[Node]>`,
//! sorted by key, swapped whole.
//!
//! The watch of a service:
//!
//! 1. `get` with the prefix `{prefix}/{service}/` → the full set and revision `r`;
//! 2. watch from `r + 1`; every response updates the set and is published if the
//!    set changed;
//! 3. a stream error (etcd killed, restarted, partitioned: the stream ends with
//!    code `Unknown` and never recovers by itself) → re-watch from the last seen
//!    revision + 1 with capped backoff (counted in `reconnects`);
//! 4. a start revision that was compacted meanwhile → full `get` and diff
//!    (counted in `resyncs`).
//!
//! While etcd is unreachable the last known set stays in force: nothing is ever
//! emptied because the registry is down. A value that is not a valid node is
//! skipped with a `warn!` naming the key and counted in `decode_errors`; a key
//! whose value turns invalid leaves the set, the rest of the set is untouched.
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
mod watch;

pub use actor::RegistryActor;
pub use messages::{
    NodesChanged, RegistryStats, Snapshot, Stats, Subscribe, SubscriptionId, Unsubscribe,
};
