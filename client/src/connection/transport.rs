//! [`NodeChannel`]: the HTTP/2 channel a node's calls go out on.
//!
//! A node's channel drives an HTTP/2 connection itself ([`Direct`], on `h2`;
//! see `http2`), over TLS when the client has TLS: a call opens its stream
//! on the connection from its own task, sends its body there when it can,
//! and awaits the answer there. tonic's `Channel` (and hyper's client under
//! it) puts a queue with a task of its own, a task per request, a timer for
//! each call's `grpc-timeout` and a stack of boxed services in front of
//! every call; a call of ours is bounded by its own deadline, so none of
//! that is needed. The connection is made by the first call that needs it,
//! and made again by the first call after it closed or began to go away;
//! calls arriving meanwhile wait for the same connection, and fail with its
//! error when it cannot be made (each starting an attempt of its own would
//! queue them one connect timeout after another).
//!
//! A short-connection call's channel is tonic's.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::TryFutureExt;
use http::uri::{Authority, Scheme};
use http_body::Body as _;
use parking_lot::Mutex;
use registry_actor::Node;
use tokio::sync::oneshot;
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::Status;
use tracing::debug;

use super::goaway::WatchingConnector;
use super::http2::{self, broken, BoxError, Detached, Keepalive, Pipe, RecvBody, Streams};
use super::report::Report;
use super::settings::ConnectionSettings;

/// The future of one request on a [`NodeChannel`].
pub(crate) type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<NodeBody>, BoxError>> + Send>>;

/// A response body from a [`NodeChannel`]: read from its stream on a node's
/// channel, tonic's from a short connection's. Not boxed, so that whoever
/// wraps it boxes it once.
#[derive(Debug)]
pub(crate) enum NodeBody {
    /// From [`Direct`].
    Direct(RecvBody),
    /// From tonic's channel.
    Tonic(Body),
}

impl http_body::Body for NodeBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            Self::Direct(body) => Pin::new(body).poll_frame(cx),
            Self::Tonic(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Direct(body) => body.is_end_stream(),
            Self::Tonic(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Direct(body) => body.size_hint(),
            Self::Tonic(body) => body.size_hint(),
        }
    }
}

/// A lazily connecting channel to one node; cheap to clone, every clone
/// shares the connection.
#[derive(Clone, Debug)]
pub(crate) enum NodeChannel {
    /// HTTP/2 driven here.
    Direct(Direct),
    /// tonic's channel: short connections, their health watches.
    Tonic(Channel),
}

/// A lazily connecting channel to `node`, made with `settings`, whose
/// connections report to `report` when the server closes them. Must run
/// inside the runtime that will carry the channel.
pub(crate) fn watched_channel(
    settings: &ConnectionSettings,
    node: &Node,
    report: Arc<dyn Report>,
) -> Result<NodeChannel, Status> {
    let connector =
        WatchingConnector::new(report, settings.connect_timeout(), settings.tls().cloned());
    Direct::new(settings, node, connector).map(NodeChannel::Direct)
}

impl tower::Service<http::Request<Body>> for NodeChannel {
    type Response = http::Response<NodeBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            // Connecting is the request's own work (see `Direct::send`).
            Self::Direct(_) => Poll::Ready(Ok(())),
            Self::Tonic(channel) => channel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self {
            Self::Direct(direct) => Box::pin(direct.clone().send(request)),
            Self::Tonic(channel) => Box::pin(
                channel
                    .call(request)
                    .map_ok(|response| response.map(NodeBody::Tonic))
                    .err_into(),
            ),
        }
    }
}

/// A node's HTTP/2 connection, driven here.
#[derive(Clone)]
pub(crate) struct Direct {
    shared: Arc<Shared>,
}

struct Shared {
    /// Where the connector connects (`http://host:port`, `https://` under
    /// TLS).
    uri: http::Uri,
    scheme: Scheme,
    authority: Authority,
    connector: WatchingConnector,
    builder: h2::client::Builder,
    keepalive: Keepalive,
    /// The runtime that carries the connection's task (and its socket).
    home: tokio::runtime::Handle,
    /// The open connection, once made.
    open: Mutex<Option<Open>>,
    /// Connections made, which numbers them.
    made: AtomicU64,
    /// Counts the streams open on the channel's connections (for their
    /// keepalive): each request holds a clone until its response ends.
    streams: Streams,
    /// Held while a connection is made: one at a time.
    connecting: tokio::sync::Mutex<()>,
    /// Attempts to connect that have ended, and why the last one failed.
    attempts: Mutex<Attempts>,
}

/// An open connection's sender, and what lets its task know when the channel
/// lets go of it.
struct Open {
    sender: h2::client::SendRequest<Bytes>,
    /// Which connection it is: a failed one is forgotten, not one made since.
    number: u64,
    /// Dropped with this: the connection's task then closes the connection
    /// once its last stream has ended.
    _release: oneshot::Sender<()>,
}

/// The connect attempts of a [`Direct`] channel that have ended.
#[derive(Default)]
struct Attempts {
    ended: u64,
    /// The last one's failure; `None` when it connected.
    failure: Option<Status>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("authority", &self.shared.authority)
            .field("connected", &self.shared.is_open())
            .finish_non_exhaustive()
    }
}

impl Direct {
    /// A channel to `node` with `settings`' keepalive, connecting through
    /// `connector`, carried by the current tokio runtime (outside one, an
    /// error).
    fn new(
        settings: &ConnectionSettings,
        node: &Node,
        connector: WatchingConnector,
    ) -> Result<Self, Status> {
        let uri = settings.uri(node)?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| Status::invalid_argument(format!("no host in {uri}")))?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let home = tokio::runtime::Handle::try_current().map_err(|e| {
            Status::internal(format!(
                "node {}: a channel needs a tokio runtime: {e}",
                node.id()
            ))
        })?;
        let (interval, timeout) = settings.keepalive();
        Ok(Self {
            shared: Arc::new(Shared {
                uri,
                scheme,
                authority,
                connector,
                builder: http2::builder(),
                keepalive: Keepalive { interval, timeout },
                home,
                open: Mutex::new(None),
                made: AtomicU64::new(0),
                streams: Streams::default(),
                connecting: tokio::sync::Mutex::new(()),
                attempts: Mutex::default(),
            }),
        })
    }

    /// The open connection's sender, ready for a request; `None` when no
    /// connection is open, or when the open one takes no more requests (it
    /// is going away, or broke), which is then forgotten.
    async fn sender(&self) -> Option<h2::client::SendRequest<Bytes>> {
        let (sender, number) = {
            let open = self.shared.open.lock();
            let open = open.as_ref()?;
            (open.sender.clone(), open.number)
        };
        match sender.ready().await {
            Ok(sender) => Some(sender),
            Err(error) => {
                debug!(node = %self.shared.authority, %error, "connection takes no more requests");
                self.shared.forget(number);
                None
            }
        }
    }

    /// Sends one request, connecting first when no connection is open.
    async fn send(
        self,
        request: http::Request<Body>,
    ) -> Result<http::Response<NodeBody>, BoxError> {
        let (mut head, body) = request.into_parts();
        // h2 takes `:scheme` and `:authority` from the URI; tonic gives the
        // path only.
        let mut parts = std::mem::take(&mut head.uri).into_parts();
        parts.scheme = Some(self.shared.scheme.clone());
        parts.authority = Some(self.shared.authority.clone());
        head.uri = http::Uri::from_parts(parts)?;
        http2::strip_connection_headers(&mut head.headers);
        let mut sender = match self.sender().await {
            Some(sender) => sender,
            None => {
                // Boxed: connecting is rare, and its future large.
                Box::pin(self.connect()).await?;
                match self.sender().await {
                    Some(sender) => sender,
                    None => {
                        let closed = std::io::Error::new(
                            std::io::ErrorKind::NotConnected,
                            "the connection closed as it was made",
                        );
                        let status = unavailable(&self.shared.uri, "no connection", closed);
                        return Err(Box::new(status));
                    }
                }
            }
        };
        let end = body.is_end_stream();
        let (response, stream) = sender
            .send_request(http::Request::from_parts(head, ()), end)
            .map_err(broken)?;
        drop(sender);
        let open = self.shared.streams.clone();
        let call = match end {
            true => None,
            false => send_body(body, stream).await,
        };
        let response = response.await.map_err(broken)?;
        Ok(response.map(|stream| NodeBody::Direct(RecvBody::new(stream, open, call))))
    }

    /// Makes a connection unless another call has made one meanwhile, or
    /// answers the failure of an attempt that ended while this call waited
    /// for it. The work runs as a task of the channel's runtime (the socket
    /// belongs to its reactor), which keeps the connection it makes even when
    /// the call that asked for it has ended meanwhile.
    async fn connect(&self) -> Result<(), Status> {
        let shared = self.shared.clone();
        let seen = shared.attempts.lock().ended;
        let made = self.shared.home.spawn(async move {
            let _one = shared.connecting.lock().await;
            if shared.is_open() {
                return Ok(());
            }
            {
                let attempts = shared.attempts.lock();
                if attempts.ended != seen {
                    if let Some(failure) = &attempts.failure {
                        return Err(failure.clone());
                    }
                }
            }
            let made = shared.handshake().await;
            let mut attempts = shared.attempts.lock();
            attempts.ended += 1;
            attempts.failure = made.as_ref().err().cloned();
            made
        });
        made.await
            .map_err(|e| Status::unavailable(format!("connecting stopped: {e}")))?
    }

    /// Connect attempts that have ended.
    #[cfg(test)]
    fn attempts(&self) -> u64 {
        self.shared.attempts.lock().ended
    }
}

/// Sends `body` on `stream` as far as it goes at once; the rest in a task of
/// its own, which resets the stream when the returned sender is dropped
/// (the call let go) before the body ended.
async fn send_body(body: Body, stream: h2::SendStream<Bytes>) -> Option<oneshot::Sender<()>> {
    let mut pipe = Pipe::new(body, stream);
    let sent = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut pipe).poll(cx))).await;
    if sent.is_ready() {
        return None;
    }
    let (call, dropped) = oneshot::channel();
    tokio::spawn(Detached {
        pipe,
        call: dropped,
    });
    Some(call)
}

impl Shared {
    /// Whether a connection is open.
    fn is_open(&self) -> bool {
        self.open.lock().is_some()
    }

    /// Forgets connection `number` if it is the open one.
    fn forget(&self, number: u64) {
        let mut open = self.open.lock();
        if open.as_ref().is_some_and(|o| o.number == number) {
            *open = None;
        }
    }

    /// Connects, shakes hands and keeps the new connection's sender; its
    /// connection runs as a task of the current runtime, which forgets it
    /// when it ends.
    async fn handshake(self: &Arc<Self>) -> Result<(), Status> {
        let mut connector = self.connector.clone();
        let io = tower::Service::call(&mut connector, self.uri.clone())
            .await
            .map_err(|e| unavailable(&self.uri, "no connection", e))?;
        let (sender, connection) = self
            .builder
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| unavailable(&self.uri, "HTTP/2 handshake failed", broken(e)))?;
        let number = self.made.fetch_add(1, Ordering::Relaxed);
        let (release, released) = oneshot::channel();
        let (shared, streams) = (Arc::downgrade(self), Arc::downgrade(&self.streams));
        let (keepalive, authority) = (self.keepalive, self.authority.clone());
        tokio::spawn(async move {
            http2::drive(connection, keepalive, streams, released, authority).await;
            if let Some(shared) = shared.upgrade() {
                shared.forget(number);
            }
        });
        *self.open.lock() = Some(Open {
            sender,
            number,
            _release: release,
        });
        Ok(())
    }
}

/// `UNAVAILABLE`: no connection to `uri` could be made, for `error` (kept as
/// the status's source, where failures are recognised).
fn unavailable(uri: &http::Uri, what: &str, error: impl Into<BoxError>) -> Status {
    let error: BoxError = error.into();
    let mut status = Status::unavailable(format!("{what} to {uri}: {error}"));
    status.set_source(Arc::from(error));
    status
}

#[cfg(test)]
mod tests;
