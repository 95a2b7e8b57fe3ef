//! Connection actors: one per node, owning its tonic `Channel`.
//!
//! A [`ConnectionActor`] holds one long-lived, lazily connected HTTP/2 channel to
//! its node (connect timeout, HTTP/2 keepalive, `TCP_NODELAY`); every call to the
//! node is multiplexed on it. It runs each [`Execute`] as a concurrent future, so
//! one actor carries many calls at once, and it reports to its picker:
//!
//! * the calls in flight ([`ReportLoad`](crate::ReportLoad)), when the picker
//!   balances by `least_request`;
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
//! actor creates its channel inside its own arbiter, which lives as long as the
//! actor's system.

mod actor;
mod messages;

pub(crate) use actor::Reports;
pub use actor::{ConnectionActor, ConnectionSettings};
pub use messages::{AttemptGuard, Close, Execute, Method};
