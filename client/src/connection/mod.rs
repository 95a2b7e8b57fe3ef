//! Connection actors: one per node, owning its tonic `Channel`.
//!
//! A [`ConnectionActor`] owns one long-lived, lazily connected HTTP/2 channel to
//! its node (connect timeout, HTTP/2 keepalive, `TCP_NODELAY`); every call to the
//! node is multiplexed on it. Calls reach the channel through its [`Connection`]
//! handle, which a pick hands out: the attempt runs in the call's own task, with
//! no further actor hop, and dropping it cancels the RPC. [`Execute`] runs an
//! attempt through the actor instead, for callers holding only its address.
//! Either way the connection reports to its picker:
//!
//! * the calls in flight, when the picker balances by `least_request`
//!   (written straight into the picker's shared state: a lock, not a message);
//! * connection failures and recoveries ([`ConnectionFailed`](crate::ConnectionFailed),
//!   [`ConnectionSucceeded`](crate::ConnectionSucceeded)), which drive ejection.
//!   A failure is recognised by the error's source chain (an I/O error such as
//!   "connection refused", or a connect timeout), never by its message.
//!
//! [`Close`] stops the actor once its calls in flight have ended; a picker sends
//! it when the node leaves. In *short-connection* mode the actor connects afresh
//! for each call and drops the connection after it, for completeness.
//!
//! Channels spawn their connection task on the runtime that creates them: the
//! picker creates each channel on its own arbiter, which lives as long as the
//! client's system.

mod actor;
mod handle;
mod messages;

pub(crate) use actor::Reports;
pub use actor::{ConnectionActor, ConnectionSettings};
pub use handle::Connection;
pub use messages::{AttemptGuard, Close, Execute, Method};
