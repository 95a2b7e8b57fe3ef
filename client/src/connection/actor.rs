//! The [`ConnectionActor`].

use std::time::Duration;

use actix::prelude::*;
use registry_actor::Node;
use tonic::transport::Endpoint;
use tonic::{Code, Status};
use tracing::debug;

use super::handle::Connection;
use super::messages::{Close, Execute};
use crate::{ConnectionFailed, ConnectionSucceeded};

/// How a connection actor connects. Every setter states its default.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    connect_timeout: Duration,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    short_connection: bool,
    report_load: bool,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            short_connection: false,
            report_load: false,
        }
    }
}

impl ConnectionSettings {
    /// Timeout of establishing a connection (default 1 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// HTTP/2 keepalive ping interval and ack timeout (default 30 s and 10 s).
    pub fn with_keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// Connect per call instead of keeping one channel (default off).
    pub fn with_short_connection(mut self, short: bool) -> Self {
        self.short_connection = short;
        self
    }

    /// Report calls in flight to the picker, for `least_request` (default off:
    /// other balancers do not read it, and it costs two messages per call).
    pub fn with_load_reports(mut self, report: bool) -> Self {
        self.report_load = report;
        self
    }

    pub(crate) fn short_connection(&self) -> bool {
        self.short_connection
    }

    pub(crate) fn reports_load(&self) -> bool {
        self.report_load
    }

    pub(crate) fn endpoint(&self, node: &Node) -> Result<Endpoint, Status> {
        let endpoint = Endpoint::from_shared(format!("http://{}", node.addr())).map_err(|e| {
            Status::invalid_argument(format!(
                "node {} has an unusable address `{}`: {e}",
                node.id(),
                node.addr()
            ))
        })?;
        Ok(endpoint
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(false)
            .tcp_nodelay(true))
    }
}

/// Where a connection actor reports to (its picker).
#[derive(Debug, Clone)]
pub(crate) struct Reports {
    /// The picker's state, written directly: a load report costs a lock, not a
    /// message. Weak, as the picker holds the connection.
    pub(crate) load: std::sync::Weak<crate::picker::SharedPicker>,
    pub(crate) failed: Recipient<ConnectionFailed>,
    pub(crate) succeeded: Recipient<ConnectionSucceeded>,
}

/// One node's connection: owns its long-lived channel, hands out the
/// [`Connection`] calls use, and stops once its node left and its calls ended.
pub struct ConnectionActor {
    connection: Connection,
    closing: bool,
}

impl std::fmt::Debug for ConnectionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionActor")
            .field("connection", &self.connection)
            .field("closing", &self.closing)
            .finish()
    }
}

impl ConnectionActor {
    pub(crate) fn new(connection: Connection) -> Self {
        Self {
            connection,
            closing: false,
        }
    }

    /// The handle calls use.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        debug!(node = %self.connection.node(), "connection closed");
    }
}

impl<Req, Resp> Handler<Execute<Req, Resp>> for ConnectionActor
where
    Req: prost::Message + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    // A `ResponseFuture` runs as its own task: the actor's context does not poll
    // every call in flight on each wake-up.
    type Result = ResponseFuture<Result<tonic::Response<Resp>, Status>>;

    fn handle(&mut self, msg: Execute<Req, Resp>, _: &mut Self::Context) -> Self::Result {
        let connection = self.connection.clone();
        let Execute {
            method,
            request,
            cancel,
        } = msg;
        Box::pin(async move {
            tokio::select! {
                biased;
                result = connection.call(&method, request) => result,
                _ = cancel => Err(Status::cancelled("attempt cancelled by its call")),
            }
        })
    }
}

impl Handler<Close> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        self.closing = true;
        if self.connection.in_flight() == 0 {
            ctx.stop();
            return;
        }
        // Calls run in their own tasks; look in on them until the last ends.
        ctx.run_interval(CLOSE_POLL, |act, ctx| {
            if act.connection.in_flight() == 0 {
                ctx.stop();
            }
        });
    }
}

/// How often a closing actor checks whether its last call ended.
const CLOSE_POLL: Duration = Duration::from_millis(20);

/// Whether a failed attempt failed in the transport: the node refused, reset or
/// dropped the connection, was unreachable, or did not accept it within the
/// connect timeout. Decided from the error's source chain, never its message.
pub(crate) fn is_connection_failure(status: &Status) -> bool {
    if !matches!(status.code(), Code::Unavailable | Code::Unknown) {
        return false;
    }
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | AddrNotAvailable
                    | TimedOut
                    | HostUnreachable
                    | NetworkUnreachable
                    | BrokenPipe
            ) {
                return true;
            }
        }
        if err.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        source = err.source();
    }
    false
}
