//! What the graceful shutdown needs beyond tonic: counting the calls in flight,
//! and cancelling the connections that are still open at the drain deadline.
//!
//! * [`TrackLayer`] counts a call from the moment it reaches the service until
//!   its response body is finished or dropped, so streams count for as long as
//!   they stream.
//! * [`Connections`] hands every accepted TCP stream out as a [`ConnStream`] that
//!   fails its reads and writes once [`Connections::cancel`] is called: hyper then
//!   closes the connection, h2 resets its streams, and the handlers' futures are
//!   dropped. tonic's own graceful shutdown has no such deadline.
//! * [`DrainSignal`] ends the health service's `Watch` streams when the drain
//!   starts, so a health watcher does not hold the drain open.

mod conn;
mod health_watch;
mod track;

pub(crate) use conn::Connections;
pub(crate) use health_watch::DrainSignal;
pub(crate) use track::{InFlight, TrackLayer};
