//! [`Connection`]: the shared handle on one node's channel, used by calls directly.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use registry_actor::Node;
use tonic::transport::Channel;
use tonic::Status;
use tracing::debug;

use super::actor::{is_connection_failure, ConnectionSettings, Reports};
use super::messages::Method;
use crate::{ConnectionFailed, ConnectionSucceeded, NodeHandle};

const UNKNOWN: u8 = 0;
const REACHABLE: u8 = 1;
const UNREACHABLE: u8 = 2;

/// One node's connection as calls use it: a clone of the node's long-lived
/// channel plus its counters. Cheap to clone; every clone shares the channel.
///
/// [`call`](Self::call) runs an attempt in the caller's own task: dropping the
/// future cancels the RPC (the server sees the stream reset), and the calls in
/// flight are counted for as long as they live.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    node: Node,
    handle: NodeHandle,
    /// `None` in short-connection mode: each call connects afresh.
    channel: Option<Channel>,
    settings: ConnectionSettings,
    reports: Reports,
    in_flight: AtomicU32,
    reachable: AtomicU8,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("node", &self.inner.node.id())
            .field("addr", &self.inner.node.addr())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A lazily connecting channel to `node` (it connects on the first call).
    /// Must run inside the runtime that will carry the channel.
    pub(crate) fn new(
        node: Node,
        handle: NodeHandle,
        settings: ConnectionSettings,
        reports: Reports,
    ) -> Result<Self, Status> {
        let channel = if settings.short_connection() {
            None
        } else {
            Some(settings.endpoint(&node)?.connect_lazy())
        };
        Ok(Self {
            inner: Arc::new(Inner {
                node,
                handle,
                channel,
                settings,
                reports,
                in_flight: AtomicU32::new(0),
                reachable: AtomicU8::new(UNKNOWN),
            }),
        })
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Calls in flight on this node through this client.
    pub fn in_flight(&self) -> u32 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Runs one attempt of `method` with `request` on the node. Answers the
    /// response or status as the server (or the transport) gave it.
    pub async fn call<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: tonic::Request<Req>,
    ) -> Result<tonic::Response<Resp>, Status>
    where
        Req: prost::Message + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let _in_flight = InFlight::enter(&self.inner);
        let channel = match &self.inner.channel {
            Some(c) => c.clone(),
            // Boxed: connecting is a large future, and rare.
            None => Box::pin(self.connect()).await?,
        };
        let mut grpc = tonic::client::Grpc::new(channel);
        if let Err(e) = grpc.ready().await {
            return Err(self.observe_err(Status::from_error(Box::new(e))));
        }
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let path = method.path_and_query();
        // tonic's unary future is a few KiB. Boxed, it is built once on the heap
        // instead of being copied into each enclosing future (attempt, strategy,
        // call, the caller's own) as they are created.
        let result = Box::pin(async move { grpc.unary(request, path, codec).await }).await;
        match result {
            Ok(response) => {
                self.observe_ok();
                Ok(response)
            }
            Err(status) => Err(self.observe_err(status)),
        }
    }

    /// A fresh channel, for one call in short-connection mode.
    async fn connect(&self) -> Result<Channel, Status> {
        let endpoint = self.inner.settings.endpoint(&self.inner.node)?;
        match endpoint.connect().await {
            Ok(c) => Ok(c),
            Err(e) => Err(self.observe_err(Status::from_error(Box::new(e)))),
        }
    }

    /// A transport failure is reported every time (ejection counts them); a
    /// success only after a failure, or the first time. These reports are rare
    /// and drive ejection, so they use `do_send`, which never drops one for a
    /// full mailbox (they carry no call).
    fn observe_ok(&self) {
        let inner = &*self.inner;
        if inner.reachable.swap(REACHABLE, Ordering::Relaxed) != REACHABLE {
            inner
                .reports
                .succeeded
                .do_send(ConnectionSucceeded { node: inner.handle });
        }
    }

    fn observe_err(&self, status: Status) -> Status {
        let inner = &*self.inner;
        // The transport failed (could not connect, or the connection broke), as
        // opposed to the node answering with an error status.
        let failed = is_connection_failure(&status)
            || (matches!(
                status.code(),
                tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Unavailable
            ) && has_transport_source(&status));
        let status = self.transport_as_unavailable(status);
        if failed {
            debug!(node = %inner.node, reason = %status.message(), "connection failed");
            inner.reachable.store(UNREACHABLE, Ordering::Relaxed);
            inner
                .reports
                .failed
                .do_send(ConnectionFailed::new(inner.handle, status.message()));
        } else {
            // The node answered: it is reachable, whatever the answer.
            self.observe_ok();
        }
        status
    }
}

impl Connection {
    /// A call the transport broke (the connection closed or reset mid-call, a
    /// server killed) reaches tonic as `UNKNOWN` "transport error", or as
    /// `CANCELLED` "operation was canceled" when the connection went away before
    /// the answer. gRPC calls a broken transport `UNAVAILABLE`, which strategies may
    /// retry. Recognised from the source chain (a `tonic::transport::Error`), never
    /// the message: a status a server sent has no such source.
    fn transport_as_unavailable(&self, status: Status) -> Status {
        let code = status.code();
        if !matches!(code, tonic::Code::Unknown | tonic::Code::Cancelled)
            || !has_transport_source(&status)
        {
            return status;
        }
        Status::unavailable(format!(
            "connection to {} broke: {}",
            self.inner.node.addr(),
            status.message()
        ))
    }
}

/// Whether a `tonic::transport::Error` is in the source chain of `status`.
fn has_transport_source(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Counts one call in flight for as long as it lives (also when cancelled).
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Self {
        let now = inner.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        inner.report_load(now);
        Self(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let now = self
            .0
            .in_flight
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        self.0.report_load(now);
    }
}

impl Inner {
    /// Tells the picker the calls in flight, when it balances by them.
    fn report_load(&self, in_flight: u32) {
        if self.settings.reports_load() {
            if let Some(picker) = self.reports.load.upgrade() {
                picker.report_load(self.handle, in_flight);
            }
        }
    }
}
