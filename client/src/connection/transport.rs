//! [`NodeChannel`]: the HTTP/2 channel a node's calls go out on.
//!
//! A node's channel drives hyper's HTTP/2 client itself ([`Direct`]), over
//! TLS when the client has TLS: a call hands its request to the connection's
//! sender, which passes it to hyper's connection task, and awaits the
//! answer. tonic's `Channel` puts a queue with a task of its own, a timer for
//! each call's `grpc-timeout` and a stack of boxed services in front of every
//! call; a call of ours is bounded by its own deadline, so none of that is
//! needed. The connection is made by the first call that needs it, and made
//! again by the first call after it closed; calls arriving meanwhile wait for
//! the same connection, and fail with its error when it cannot be made (each
//! starting an attempt of its own would queue them one connect timeout after
//! another).
//!
//! A short-connection call's channel is tonic's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::TryFutureExt;
use http::uri::{Authority, Scheme};
use hyper::client::conn::http2;
use hyper_util::rt::TokioTimer;
use parking_lot::Mutex;
use registry_actor::Node;
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::Status;
use tracing::debug;

use super::goaway::WatchingConnector;
use super::report::Report;
use super::settings::ConnectionSettings;

/// What a channel's calls fail with: a transport error (hyper's, tonic's)
/// or a [`Status`] saying why no connection could be made.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future of one request on a [`NodeChannel`].
pub(crate) type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<NodeBody>, BoxError>> + Send>>;

/// A response body from a [`NodeChannel`]: hyper's own from a node's
/// channel, tonic's from a short connection's. Not boxed, so that whoever
/// wraps it boxes it once.
#[derive(Debug)]
pub(crate) enum NodeBody {
    /// From [`Direct`].
    Direct(hyper::body::Incoming),
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
            Self::Direct(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
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

/// A node's HTTP/2 connection, driven by hyper's client.
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
    builder: http2::Builder<BoxingExecutor>,
    /// The runtime that carries the connection's task (and its socket).
    home: tokio::runtime::Handle,
    /// The open connection's sender, once made.
    sender: Mutex<Option<http2::SendRequest<Body>>>,
    /// Held while a connection is made: one at a time.
    connecting: tokio::sync::Mutex<()>,
    /// Attempts to connect that have ended, and why the last one failed.
    attempts: Mutex<Attempts>,
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
        let mut builder = http2::Builder::new(BoxingExecutor);
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(false);
        Ok(Self {
            shared: Arc::new(Shared {
                uri,
                scheme,
                authority,
                connector,
                builder,
                home,
                sender: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                attempts: Mutex::default(),
            }),
        })
    }

    /// Sends the request in `request` on the open connection; leaves it
    /// there when there is none.
    fn try_send(
        &self,
        request: &mut Option<http::Request<Body>>,
    ) -> Option<impl Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>> {
        let mut sender = self.shared.sender.lock();
        let sender = sender.as_mut().filter(|s| !s.is_closed())?;
        request.take().map(|request| sender.send_request(request))
    }

    /// Sends one request, connecting first when no connection is open.
    async fn send(
        self,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<NodeBody>, BoxError> {
        // hyper takes `:scheme` and `:authority` from the URI; tonic gives
        // the path only.
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(self.shared.scheme.clone());
        parts.authority = Some(self.shared.authority.clone());
        *request.uri_mut() = http::Uri::from_parts(parts)?;
        let mut request = Some(request);
        let answer = match self.try_send(&mut request) {
            Some(answer) => answer,
            None => {
                // Boxed: connecting is rare, and its future large.
                Box::pin(self.connect()).await?;
                match self.try_send(&mut request) {
                    Some(answer) => answer,
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
        let response = answer.await?;
        Ok(response.map(NodeBody::Direct))
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

impl Shared {
    /// Whether a connection is open.
    fn is_open(&self) -> bool {
        self.sender.lock().as_ref().is_some_and(|s| !s.is_closed())
    }

    /// Connects, shakes hands and keeps the new connection's sender; its
    /// connection runs as a task of the current runtime.
    async fn handshake(&self) -> Result<(), Status> {
        let mut connector = self.connector.clone();
        let io = tower::Service::call(&mut connector, self.uri.clone())
            .await
            .map_err(|e| unavailable(&self.uri, "no connection", e))?;
        let (sender, connection) = self
            .builder
            .handshake(io)
            .await
            .map_err(|e| unavailable(&self.uri, "HTTP/2 handshake failed", e))?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(node = %authority, error = %e, "connection ended");
            }
        });
        *self.sender.lock() = Some(sender);
        Ok(())
    }
}

/// `UNAVAILABLE`: no connection to `uri` could be made, for `error` (kept as
/// the status's source, where failures are recognised).
fn unavailable<E>(uri: &http::Uri, what: &str, error: E) -> Status
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut status = Status::unavailable(format!("{what} to {uri}: {error}"));
    status.set_source(Arc::new(error));
    status
}

/// Spawns the tasks hyper makes for each request (sending its body, waiting
/// for its answer) on the current runtime, boxed: a task's future is moved
/// into the task and overwritten whole when it ends, and a box is a pointer.
#[derive(Clone, Copy, Debug)]
struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    struct Silent;

    fn request() -> http::Request<Body> {
        let mut request = http::Request::new(Body::empty());
        *request.uri_mut() = http::Uri::from_static("/svc.Svc/Call");
        request
    }

    impl Report for Silent {
        fn failed(&self, _: &str) {}
        fn succeeded(&self) {}
        fn serving(&self, _: bool) {}
        fn going_away(&self) {}
    }

    /// Sends four calls at once on a channel to `addr` (over `tls` when set)
    /// with a connect timeout of 200 ms that no connection can meet; checks
    /// that each fails with that timeout, after one attempt for the four.
    async fn four_calls_waiting_for_one_failed_attempt(
        addr: std::net::SocketAddr,
        tls: Option<crate::connection::ClientTls>,
    ) -> Direct {
        use crate::connection::classify::is_connection_failure;

        let node = Node::new("stuck", "svc", addr.to_string()).expect("node");
        let settings = ConnectionSettings::default()
            .with_connect_timeout(Duration::from_millis(200))
            .with_tls(tls);
        let Ok(NodeChannel::Direct(direct)) = watched_channel(&settings, &node, Arc::new(Silent))
        else {
            panic!("a node's channel is driven directly");
        };
        let calls = (0..4).map(|_| direct.clone().send(request()));
        let answers = tokio::time::timeout(
            Duration::from_secs(20),
            futures_util::future::join_all(calls),
        )
        .await
        .expect("the calls end before the test's bound");
        for answer in answers {
            let error = answer.expect_err("no connection can be made");
            let status = error.downcast::<Status>().expect("a status");
            assert!(is_connection_failure(&status), "{status:?}");
            assert!(
                format!("{status:?}").contains("within the connect timeout of 200ms"),
                "{status:?}"
            );
        }
        assert_eq!(
            direct.attempts(),
            1,
            "one attempt for the calls waiting together"
        );
        direct
    }

    #[tokio::test]
    async fn calls_waiting_for_a_connect_that_fails_answer_its_failure_without_trying_again() {
        let (addr, _held, _listener) = crate::connection::testing::full_listener().await;
        let direct = four_calls_waiting_for_one_failed_attempt(addr, None).await;
        // A call after that failure tries again.
        let again = direct.clone().send(request()).await;
        assert!(again.is_err());
        assert_eq!(direct.attempts(), 2);
    }

    #[tokio::test]
    async fn calls_waiting_for_a_tls_handshake_that_hangs_answer_its_failure_without_trying_again()
    {
        // The kernel takes the TCP connection (nothing accepts it) and the
        // TLS handshake is never answered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tls = crate::connection::testing::client_tls();
        four_calls_waiting_for_one_failed_attempt(addr, Some(tls)).await;
    }

    #[test]
    fn a_channel_made_outside_a_tokio_runtime_is_an_error_naming_the_node() {
        let node = Node::new("n1", "svc", "127.0.0.1:1").expect("node");
        let made = watched_channel(&ConnectionSettings::default(), &node, Arc::new(Silent));
        let status = made.expect_err("no runtime to carry the channel");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("node n1"), "{status:?}");
        assert!(status.message().contains("tokio runtime"), "{status:?}");
    }
}
