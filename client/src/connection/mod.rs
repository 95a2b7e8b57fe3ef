//! Connections: one per node, owning its HTTP/2 channel.
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
//! With `health_check`, a `HealthWatch` follows the `grpc.health.v1` status
//! of each connected node's server on the node's channel, and reports it like
//! the transport's failures: a node whose server says it does not serve, or
//! whose watch's connection broke (a GOAWAY and the server's exit), is not
//! picked until the server says it serves again.
//!
//! The server closing a connection is noticed as it happens: each channel's
//! connections read the HTTP/2 frame headers the server sends (above TLS,
//! whose handshake the channel does itself) and report its GOAWAY, or else
//! the end of the connection; the node is then not picked until its server
//! answers on a fresh connection (see `goaway`).
//!
//! The modules form one chain: `networks` → `tls` → `settings` → `classify` →
//! `report` → `tcp` → `goaway` → `http2` → `transport` → `runtime` →
//! `stream` → `handle` → `health` → `messages` → `actor`.

mod actor;
mod classify;
mod goaway;
mod handle;
mod health;
mod http2;
mod messages;
mod networks;
mod report;
mod runtime;
mod settings;
mod stream;
mod tcp;
#[cfg(test)]
mod testing;
mod tls;
mod transport;

pub use actor::ConnectionActor;
pub use handle::Connection;
pub(crate) use health::{answers, HealthWatch};
pub use messages::Close;
pub use networks::AllowedNetworks;
pub(crate) use report::{Outcomes, Report};
pub(crate) use runtime::{Alive, Home, HomeKey, IoRuntime};
pub use settings::ConnectionSettings;
pub use tls::ClientTls;
