//! The [`ConnectionActor`].

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use registry_actor::Node;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::debug;

use super::messages::{Close, Execute};
use crate::{ConnectionFailed, ConnectionSucceeded, NodeHandle, ReportLoad};

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

    fn endpoint(&self, node: &Node) -> Result<Endpoint, Status> {
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
    pub(crate) load: Recipient<ReportLoad>,
    pub(crate) failed: Recipient<ConnectionFailed>,
    pub(crate) succeeded: Recipient<ConnectionSucceeded>,
}

/// One node's connection. See the [module docs](super).
pub struct ConnectionActor {
    node: Node,
    handle: NodeHandle,
    settings: ConnectionSettings,
    reports: Reports,
    channel: Option<Channel>,
    in_flight: Rc<Cell<u32>>,
    /// Whether the last attempt reached the node; reports go out on changes only.
    reachable: Rc<Cell<Option<bool>>>,
    closing: bool,
}

impl std::fmt::Debug for ConnectionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionActor")
            .field("node", &self.node.id())
            .field("addr", &self.node.addr())
            .field("in_flight", &self.in_flight.get())
            .finish_non_exhaustive()
    }
}

impl ConnectionActor {
    pub(crate) fn new(
        node: Node,
        handle: NodeHandle,
        settings: ConnectionSettings,
        reports: Reports,
    ) -> Self {
        Self {
            node,
            handle,
            settings,
            reports,
            channel: None,
            in_flight: Rc::default(),
            reachable: Rc::default(),
            closing: false,
        }
    }

    /// The shared channel, created lazily on the first call.
    fn channel(&mut self) -> Result<Channel, Status> {
        if let Some(channel) = &self.channel {
            return Ok(channel.clone());
        }
        let channel = self.settings.endpoint(&self.node)?.connect_lazy();
        self.channel = Some(channel.clone());
        Ok(channel)
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Calls arrive in bursts; the default 16 would make callers wait for room.
        ctx.set_mailbox_capacity(1024);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        debug!(node = %self.node, "connection closed");
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
        let shared = if self.settings.short_connection {
            None
        } else {
            match self.channel() {
                Ok(c) => Some(c),
                Err(status) => return Box::pin(std::future::ready(Err(status))),
            }
        };
        let endpoint = self.settings.endpoint(&self.node);
        let Execute {
            method,
            request,
            cancel,
        } = msg;
        let in_flight = InFlight::enter(
            self.in_flight.clone(),
            self.handle,
            self.settings.report_load,
            self.reports.load.clone(),
        );
        let reachable = self.reachable.clone();
        let reports = self.reports.clone();
        let (handle, node_id) = (self.handle, self.node.id().to_owned());

        let call = async move {
            let channel = match shared {
                Some(c) => c,
                None => endpoint?
                    .connect()
                    .await
                    .map_err(|e| Status::from_error(Box::new(e)))?,
            };
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready()
                .await
                .map_err(|e| Status::from_error(Box::new(e)))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            grpc.unary(request, method.path_and_query(), codec).await
        };
        Box::pin(async move {
            let _in_flight = in_flight;
            let result = tokio::select! {
                biased;
                result = call => result,
                _ = cancel => return Err(Status::cancelled("attempt cancelled by its call")),
            };
            // Reachability is reported on changes (and on every failure, which
            // ejection counts): both messages are absolute, so `try_send` losing
            // one to a full mailbox is healed by the next.
            let failed = matches!(&result, Err(status) if is_connection_failure(status));
            if failed {
                let why = result
                    .as_ref()
                    .err()
                    .map(|s| s.message().to_owned())
                    .unwrap_or_default();
                debug!(node = %node_id, reason = %why, "connection failed");
                reachable.set(Some(false));
                let _ = reports.failed.try_send(ConnectionFailed::new(handle, why));
            } else if reachable.replace(Some(true)) != Some(true) {
                let _ = reports
                    .succeeded
                    .try_send(ConnectionSucceeded { node: handle });
            }
            result
        })
    }
}

/// Counts one call in flight for as long as it lives (also when cancelled).
struct InFlight {
    count: Rc<Cell<u32>>,
    node: NodeHandle,
    report: Option<Recipient<ReportLoad>>,
}

impl InFlight {
    fn enter(
        count: Rc<Cell<u32>>,
        node: NodeHandle,
        report: bool,
        to: Recipient<ReportLoad>,
    ) -> Self {
        count.set(count.get() + 1);
        let report = report.then_some(to);
        if let Some(r) = &report {
            let _ = r.try_send(ReportLoad {
                node,
                in_flight: count.get(),
            });
        }
        Self {
            count,
            node,
            report,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.set(self.count.get().saturating_sub(1));
        if let Some(r) = &self.report {
            let _ = r.try_send(ReportLoad {
                node: self.node,
                in_flight: self.count.get(),
            });
        }
    }
}

impl Handler<Close> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        self.closing = true;
        if self.in_flight.get() == 0 {
            ctx.stop();
            return;
        }
        // Calls run as their own tasks; look in on them until the last ends.
        ctx.run_interval(CLOSE_POLL, |act, ctx| {
            if act.in_flight.get() == 0 {
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
