//! [`Connection`]: the shared handle on one node's channel, used by calls directly.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use registry_actor::Node;
use tonic::Status;
use tracing::debug;

use super::classify::{is_own_timeout, is_transport_failure, transport_as_unavailable};
use super::report::{Outcomes, Report};
use super::settings::ConnectionSettings;
use super::stream::{Counted, Open};
use super::tcp::TcpConnector;
use super::transport::{watched_channel, NodeChannel};
use crate::method::Method;

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
    /// `None` in short-connection mode: each call connects afresh.
    channel: Option<NodeChannel>,
    settings: ConnectionSettings,
    report: Arc<dyn Report>,
    /// Answers reported as failures of the node.
    failure_codes: Arc<[tonic::Code]>,
    /// Calls in flight, shared with the picker (`least_request` reads it).
    in_flight: Arc<AtomicU32>,
    /// Outcomes of attempts, shared with the picker (success-rate ejection).
    outcomes: Arc<Outcomes>,
    reachable: AtomicU8,
    /// Whether calls may carry a bearer token to the node.
    token_allowed: bool,
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
    /// A lazily connecting channel to `node` (it connects on the first call),
    /// counting its calls in flight in `in_flight` and its attempts'
    /// outcomes in `outcomes`, and reporting the transport's failures, and
    /// answers with one of `failure_codes`, to `report`. Must run inside the runtime that will carry the channel.
    pub(crate) fn new(
        node: Node,
        settings: ConnectionSettings,
        report: Arc<dyn Report>,
        in_flight: Arc<AtomicU32>,
        outcomes: Arc<Outcomes>,
        failure_codes: Arc<[tonic::Code]>,
    ) -> Result<Self, Status> {
        let channel = if settings.short_connection() {
            None
        } else {
            Some(watched_channel(&settings, &node, report.clone())?)
        };
        let token_allowed = settings.token_allowed(&node);
        Ok(Self {
            inner: Arc::new(Inner {
                node,
                channel,
                settings,
                report,
                failure_codes,
                in_flight,
                outcomes,
                reachable: AtomicU8::new(UNKNOWN),
                token_allowed,
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
        self.inner.check_token(request.metadata().as_ref())?;
        let _in_flight = InFlight::enter(&self.inner);
        let channel = match &self.inner.channel {
            Some(c) => c.clone(),
            // Boxed: connecting is a large future, and rare.
            None => Box::pin(self.connect()).await?,
        };
        let mut grpc = tonic::client::Grpc::new(channel);
        if let Err(e) = grpc.ready().await {
            return Err(self.observe_err(Status::from_error(e)));
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

    /// Sends one raw gRPC request to the node, answering once its response
    /// headers arrive: the response, its body still streaming, or the status
    /// a trailers-only response (or the transport) gave. The call counts in
    /// flight until its response body ends or is dropped.
    pub(crate) async fn send(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        self.inner.check_token(request.headers())?;
        let open = Open::enter(&self.inner.in_flight);
        let mut channel = match &self.inner.channel {
            Some(c) => c.clone(),
            None => Box::pin(self.connect()).await?,
        };
        let response = match tower::ServiceExt::ready(&mut channel).await {
            // The channel's future is boxed already.
            Ok(ready) => tower::Service::call(ready, request).await,
            Err(e) => Err(e),
        };
        let response = response.map_err(|e| self.observe_err(Status::from_error(e)))?;
        if let Some(status) = Status::from_header_map(response.headers()) {
            if status.code() != tonic::Code::Ok {
                return Err(self.observe_err(status));
            }
        }
        self.observe_ok();
        Ok(response.map(|body| tonic::body::Body::new(Counted::new(body, open))))
    }

    /// Records that an attempt on the node got no answer within its attempt
    /// timeout of `after`: a failure of the node, as a broken transport is.
    pub(crate) fn timed_out(&self, after: std::time::Duration) {
        let inner = &*self.inner;
        inner.outcomes.record(false);
        inner.reachable.store(UNREACHABLE, Ordering::Relaxed);
        inner.report.failed(&format!(
            "no answer within the attempt timeout of {after:?}"
        ));
    }

    /// The channel a health watch of the node uses: the one calls share, or
    /// in short-connection mode a lazily connecting one of its own. Must run
    /// inside the runtime that will carry a new channel.
    pub(crate) fn health_channel(&self) -> Result<NodeChannel, Status> {
        match &self.inner.channel {
            Some(channel) => Ok(channel.clone()),
            None => Ok(NodeChannel::Tonic(
                self.inner
                    .settings
                    .endpoint(&self.inner.node)?
                    .connect_with_connector_lazy(TcpConnector),
            )),
        }
    }

    /// A fresh channel, for one call in short-connection mode.
    async fn connect(&self) -> Result<NodeChannel, Status> {
        let endpoint = self.inner.settings.endpoint(&self.inner.node)?;
        match endpoint.connect_with_connector(TcpConnector).await {
            Ok(c) => Ok(NodeChannel::Tonic(c)),
            Err(e) => Err(self.observe_err(Status::from_error(Box::new(e)))),
        }
    }

    /// A failure (a broken transport, an answer with one of the failure codes,
    /// an attempt timeout) is reported every time (ejection counts them); a
    /// success only after a failure, or the first time.
    fn observe_ok(&self) {
        let inner = &*self.inner;
        inner.outcomes.record(true);
        if inner.reachable.swap(REACHABLE, Ordering::Relaxed) != REACHABLE {
            inner.report.succeeded();
        }
    }

    fn observe_err(&self, status: Status) -> Status {
        if is_own_timeout(&status) {
            // The caller's deadline passed: it says nothing of the node (an
            // attempt timeout is reported by the call, see `timed_out`).
            return status;
        }
        let inner = &*self.inner;
        let failed = is_transport_failure(&status) || inner.failure_codes.contains(&status.code());
        let status = transport_as_unavailable(status, inner.node.addr());
        if failed {
            debug!(node = %inner.node, code = ?status.code(), reason = %status.message(), "node failed");
            inner.outcomes.record(false);
            inner.reachable.store(UNREACHABLE, Ordering::Relaxed);
            inner.report.failed(status.message());
        } else {
            // The node answered: it is reachable, whatever the answer.
            self.observe_ok();
        }
        status
    }
}

impl Inner {
    /// Refuses a call carrying a bearer token (in `headers`) when it would
    /// travel in plaintext to a node that is not on this host. Checked
    /// before anything is sent.
    fn check_token(&self, headers: &http::HeaderMap) -> Result<(), Status> {
        if self.token_allowed || !headers.contains_key(http::header::AUTHORIZATION) {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "not sending the bearer token (client.token) in plaintext to node {} at {}, \
             which is not a loopback address: configure [client.tls], or set \
             client.allow_plaintext_token = true",
            self.node.id(),
            self.node.addr()
        )))
    }
}

/// Counts one call in flight for as long as it lives (also when cancelled).
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Self {
        inner.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
