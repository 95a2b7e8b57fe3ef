//! The HTTP/2 parts of a node's channel, on `h2` directly: the connection's
//! task with its keepalive ([`drive`]), a request body sent on its stream
//! ([`Pipe`]), a response body read from its stream ([`RecvBody`]), and the
//! errors of both as a call sees them ([`broken`]).
//!
//! A request goes from the calling task into the connection's send queue,
//! and its answer comes back to that task: no task of its own per request,
//! no queue between the call and the connection. Only a request body that
//! cannot be sent at once (a stream waiting for the server's flow-control
//! window, or for the caller's next message) gets a task of its own, which
//! ends when the body does or when the call is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::Connection;
use h2::{Ping, PingPong, RecvStream, SendStream};
use http_body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::{sleep, Instant, Sleep};
use tonic::body::Body;
use tracing::debug;

/// What a channel's calls fail with: a transport error or a status saying
/// why no connection could be made.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The h2 builder of a node's connections: the windows, frame and header
/// limits hyper's HTTP/2 client uses, and no server push.
pub(crate) fn builder() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_max_send_streams(100)
        .initial_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(5 * 1024 * 1024)
        .max_frame_size(16 * 1024)
        .max_header_list_size(16 * 1024)
        .max_send_buffer_size(1024 * 1024)
        .enable_push(false);
    builder
}

/// An HTTP/2 error as a call sees it: an I/O error as itself (its kind says
/// how the connection failed: reset, broken pipe); the server's GOAWAY as
/// `UNAVAILABLE` (the stream was refused, or its connection closed, as the
/// server went away: a broken transport, not an answer), with h2's error as
/// its source; any other as h2's (a stream reset, a protocol error, whose
/// reason gives the code).
pub(crate) fn broken(error: h2::Error) -> BoxError {
    if error.is_io() {
        if let Some(io) = error.into_io() {
            return Box::new(io);
        }
        return Box::new(std::io::Error::other("HTTP/2 connection failed"));
    }
    if error.is_go_away() && error.is_remote() {
        let mut status = tonic::Status::unavailable(format!("the server is going away: {error}"));
        status.set_source(Arc::new(error));
        return Box::new(status);
    }
    Box::new(error)
}

/// Drops from `headers` the fields HTTP/2 forbids in a request, which a
/// caller's metadata may carry: the connection-specific ones (`connection`,
/// `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`) and a
/// `te` other than `trailers`. h2 refuses a request that has any of them;
/// hyper's client, and so raw tonic, drops them.
pub(crate) fn strip_connection_headers(headers: &mut http::HeaderMap) {
    use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};

    let forbidden = |(name, value): (&http::HeaderName, &http::HeaderValue)| {
        name == CONNECTION
            || name == TRANSFER_ENCODING
            || name == UPGRADE
            || name.as_str() == "keep-alive"
            || name.as_str() == "proxy-connection"
            || (name == TE && value != "trailers")
    };
    if !headers.iter().any(forbidden) {
        return;
    }
    debug!("dropping request headers HTTP/2 forbids");
    for name in [CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if headers.get_all(TE).iter().any(|v| v != "trailers") {
        headers.remove(TE);
    }
}

/// Counts a connection's open streams: each holds a clone.
pub(crate) type Streams = Arc<()>;

/// The HTTP/2 keepalive of a connection: while a stream is open, a PING every
/// `interval`; the connection is closed when one is not answered within
/// `timeout`. Idle connections are not pinged (servers may refuse pings
/// without streams).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// Runs a connection until it ends: the server closed it, it broke, its
/// keepalive went unanswered, or `closed` fired (the channel let go of it)
/// and its last stream ended. `streams` counts its open streams; `ended` is
/// called once it has ended.
pub(crate) async fn drive<T>(
    mut connection: Connection<T, Bytes>,
    keepalive: Keepalive,
    streams: Weak<()>,
    mut closed: oneshot::Receiver<()>,
    authority: impl std::fmt::Display,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut pinger = connection.ping_pong().map(|pings| Pinger {
        pings,
        keepalive,
        timer: Box::pin(sleep(keepalive.interval)),
        waiting: false,
    });
    let mut let_go = false;
    let ended = std::future::poll_fn(|cx| {
        if !let_go && Pin::new(&mut closed).poll(cx).is_ready() {
            // h2 closes an idle connection with no sender left when it is
            // polled next: now.
            let_go = true;
        }
        if let Poll::Ready(result) = Pin::new(&mut connection).poll(cx) {
            return Poll::Ready(result.err().map(|e| e.to_string()));
        }
        if let Some(pinger) = pinger.as_mut() {
            // The channel holds one count until it lets go.
            let open = streams.strong_count() > usize::from(!let_go);
            if pinger.poll_unanswered(cx, open).is_ready() {
                return Poll::Ready(Some("keepalive PING not answered".to_owned()));
            }
        }
        Poll::Pending
    })
    .await;
    match ended {
        Some(error) => debug!(node = %authority, %error, "connection ended"),
        None => debug!(node = %authority, "connection closed"),
    }
}

/// The keepalive's PINGs on one connection.
struct Pinger {
    pings: PingPong,
    keepalive: Keepalive,
    timer: Pin<Box<Sleep>>,
    /// A PING is out, and `timer` is its deadline.
    waiting: bool,
}

impl Pinger {
    /// Ready when a PING went unanswered (or could not be sent): the
    /// connection is dead. `open`: whether a stream is open.
    fn poll_unanswered(&mut self, cx: &mut Context<'_>, open: bool) -> Poll<()> {
        loop {
            if self.waiting {
                match self.pings.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.waiting = false;
                        self.rearm(self.keepalive.interval);
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.waiting {
                return Poll::Ready(());
            }
            if open {
                if self.pings.send_ping(Ping::opaque()).is_err() {
                    return Poll::Ready(());
                }
                self.waiting = true;
                self.rearm(self.keepalive.timeout);
            } else {
                self.rearm(self.keepalive.interval);
            }
        }
    }

    fn rearm(&mut self, after: Duration) {
        self.timer.as_mut().reset(Instant::now() + after);
    }
}

/// Sends a request body on its stream: each data frame (the first at once,
/// later ones as the stream's flow-control window allows), then the
/// trailers or the end of the stream. A body that fails resets the stream;
/// a stream the server reset ends it.
pub(crate) struct Pipe {
    body: Body,
    stream: SendStream<Bytes>,
    /// Whether a data frame has been sent.
    sent: bool,
    /// A data frame waiting for window, and whether it ends the body.
    waiting: Option<(Bytes, bool)>,
}

impl Pipe {
    pub(crate) fn new(body: Body, stream: SendStream<Bytes>) -> Self {
        Self {
            body,
            stream,
            sent: false,
            waiting: None,
        }
    }

    /// Sends `data`; whether the body is done (it ended, or the stream failed).
    fn send(&mut self, data: Bytes, end: bool) -> bool {
        self.sent = true;
        self.stream.send_data(data, end).is_err() || end
    }
}

impl Future for Pipe {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if let Poll::Ready(reason) = this.stream.poll_reset(cx) {
                debug!(
                    ?reason,
                    "request stream reset; its body is not sent further"
                );
                return Poll::Ready(());
            }
            if let Some((data, end)) = this.waiting.take() {
                while this.stream.capacity() == 0 {
                    match this.stream.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(0))) => {}
                        Poll::Ready(Some(Ok(_))) => break,
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                        Poll::Pending => {
                            this.waiting = Some((data, end));
                            return Poll::Pending;
                        }
                    }
                }
                if this.send(data, end) {
                    return Poll::Ready(());
                }
                continue;
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = this.body.is_end_stream();
                        // The first frame goes out at once: h2 keeps it until
                        // the window allows. Later ones wait for window, so
                        // that a stream never buffers more than one frame.
                        if data.is_empty() || !this.sent {
                            if this.send(data, end) {
                                return Poll::Ready(());
                            }
                        } else {
                            this.stream.reserve_capacity(1);
                            this.waiting = Some((data, end));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.stream.reserve_capacity(0);
                            let _ = this.stream.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
                Some(Err(error)) => {
                    debug!(%error, "request body failed; resetting its stream");
                    this.stream.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(());
                }
                None => {
                    let _ = this.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// A [`Pipe`] in a task of its own, until its body ends or its call lets go
/// (`call` closed): then its stream is reset.
pub(crate) struct Detached {
    pub(crate) pipe: Pipe,
    pub(crate) call: oneshot::Receiver<()>,
}

impl Future for Detached {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Pin::new(&mut this.call).poll(cx).is_ready() {
            this.pipe.stream.send_reset(h2::Reason::CANCEL);
            return Poll::Ready(());
        }
        Pin::new(&mut this.pipe).poll(cx)
    }
}

/// A response body read from its HTTP/2 stream: the data frames (each
/// returned to the stream's flow-control window as it is taken), then the
/// trailers. Holds its stream's place in the connection's open streams, and
/// the call's hold on a request body still being sent.
pub(crate) struct RecvBody {
    stream: RecvStream,
    data_done: bool,
    done: bool,
    _open: Streams,
    _call: Option<oneshot::Sender<()>>,
}

impl RecvBody {
    pub(crate) fn new(
        stream: RecvStream,
        open: Streams,
        call: Option<oneshot::Sender<()>>,
    ) -> Self {
        Self {
            stream,
            data_done: false,
            done: false,
            _open: open,
            _call: call,
        }
    }
}

impl std::fmt::Debug for RecvBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBody")
            .field("stream", &self.stream.stream_id())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(broken(error))));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.stream.poll_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(broken(error)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
