//! Connections: one per node, owning its tonic `Channel`.
//!
//! A [`ConnectionActor`] owns one long-lived, lazily connected HTTP/2 channel to
//! its node (connect timeout, HTTP/2 keepalive, `TCP_NODELAY`); every call to the
//! node is multiplexed on it. Calls reach the channel through its [`Connection`]
//! handle, which a pick hands out: the attempt runs in the call's own task, with
//! no actor hop, and dropping it cancels the RPC. The connection
//!
//! * counts the calls in flight in a counter it shares with the picker
//!   (`least_request` reads it; no report, no lock);
//! * reports transport failures and recoveries to its picker, which drive
//!   ejection. A failure is recognised by the error's source chain (an I/O
//!   error such as "connection refused", or a connect timeout), never by its
//!   message.
//!
//! [`Close`] stops the actor once its calls in flight have ended; a picker sends
//! it when the node leaves. In *short-connection* mode each call connects afresh
//! and drops the connection after it.
//!
//! Channels spawn their connection and I/O tasks on the runtime that creates
//! them: each node has one channel per runtime that calls it, made on that
//! runtime (see `runtime`).
//!
//! The modules form one chain: `settings` → `classify` → `report` → `runtime` →
//! `stream` → `handle` → `messages` → `actor`.

mod actor;
mod classify;
mod handle;
mod messages;
mod report;
mod runtime;
mod settings;
mod stream;

pub use actor::ConnectionActor;
pub use handle::Connection;
pub use messages::Close;
pub(crate) use report::Report;
pub(crate) use runtime::{Alive, Home, HomeKey, IoRuntime};
pub use settings::ConnectionSettings;
