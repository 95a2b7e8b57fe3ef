//! Tests of a node's channel against loopback servers: connect failures,
//! and h2 servers that hold back windows, answers and PINGs.

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
async fn calls_waiting_for_a_tls_handshake_that_hangs_answer_its_failure_without_trying_again() {
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

/// A request body sent chunk by chunk from a channel the test feeds.
struct Chunks(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

type Accepted = (
    http::Request<h2::RecvStream>,
    h2::server::SendResponse<Bytes>,
);

/// An h2 server on a loopback port, made by `server`, sending each request
/// it accepts to the receiver. With `stall` it stops reading its
/// connection after the first request (and keeps it open): no frame is
/// answered, PINGs included.
async fn h2_server(
    server: h2::server::Builder,
    stall: bool,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Accepted>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        let mut connection = server
            .handshake::<_, Bytes>(socket)
            .await
            .expect("server handshake");
        while let Some(Ok(accepted)) = connection.accept().await {
            let _ = tx.send(accepted);
            if stall {
                std::future::pending::<()>().await;
            }
        }
    });
    (addr, rx)
}

/// An h2 server's settings with a stream window of `window` bytes.
fn window(window: u32) -> h2::server::Builder {
    let mut server = h2::server::Builder::new();
    server.initial_window_size(window);
    server
}

fn direct_to(addr: std::net::SocketAddr, settings: ConnectionSettings) -> Direct {
    let node = Node::new("h2", "svc", addr.to_string()).expect("node");
    match watched_channel(&settings, &node, Arc::new(Silent)) {
        Ok(NodeChannel::Direct(direct)) => direct,
        _ => panic!("a node's channel is driven directly"),
    }
}

fn request_of(body: Chunks) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(body));
    *request.uri_mut() = http::Uri::from_static("/svc.Svc/Call");
    request
}

const BOUND: Duration = Duration::from_secs(20);

type Sent = tokio::task::JoinHandle<Result<http::Response<NodeBody>, BoxError>>;

/// Checks that the call in `sent` ends within the test's bound with `200 OK`.
async fn answered_ok(sent: Sent, what: &str) {
    let answer = tokio::time::timeout(BOUND, sent)
        .await
        .unwrap_or_else(|_| panic!("{what}: the call ends"))
        .expect("call task");
    assert_eq!(answer.expect(what).status(), http::StatusCode::OK);
}

#[tokio::test]
async fn a_request_body_past_the_servers_window_is_sent_whole() {
    let (addr, mut accepted) = h2_server(window(16 * 1024), false).await;
    let direct = direct_to(addr, ConnectionSettings::default());
    let (chunks, body) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..64 {
        chunks
            .send(Bytes::from(vec![7u8; 16 * 1024]))
            .expect("queued");
    }
    drop(chunks);
    let call = tokio::spawn(direct.send(request_of(Chunks(body))));
    let (request, mut respond) = accepted.recv().await.expect("a request");
    let mut stream = request.into_body();
    let mut got = 0;
    let read = async {
        while let Some(data) = stream.data().await {
            let data = data.expect("the body's data");
            got += data.len();
            let _ = stream.flow_control().release_capacity(data.len());
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("the whole body arrives");
    assert_eq!(got, 64 * 16 * 1024, "every byte, four times the window");
    respond
        .send_response(http::Response::new(()), true)
        .expect("answered");
    answered_ok(call, "the call ends").await;
}

#[tokio::test]
async fn a_request_body_still_sending_is_reset_when_its_call_lets_go() {
    let (addr, mut accepted) = h2_server(window(64 * 1024), false).await;
    let direct = direct_to(addr, ConnectionSettings::default());
    let (chunks, body) = tokio::sync::mpsc::unbounded_channel();
    chunks.send(Bytes::from_static(b"first")).expect("queued");
    let call = tokio::spawn(direct.send(request_of(Chunks(body))));
    let (request, mut respond) = accepted.recv().await.expect("a request");
    respond
        .send_response(http::Response::new(()), false)
        .expect("headers sent");
    let response = tokio::time::timeout(BOUND, call)
        .await
        .expect("the headers arrive")
        .expect("call task")
        .expect("a response");
    let mut stream = request.into_body();
    let first = stream.data().await.expect("a chunk").expect("data");
    assert_eq!(&first[..], b"first");
    // The caller lets go of the call; its body has not ended (`chunks`
    // is still held) and never will.
    drop(response);
    let next = tokio::time::timeout(BOUND, stream.data())
        .await
        .expect("the server hears of it");
    let error = next.expect("not a clean end").expect_err("a reset");
    assert_eq!(error.reason(), Some(h2::Reason::CANCEL), "{error}");
    drop(chunks);
}

#[tokio::test]
async fn a_connection_whose_server_stops_answering_is_closed_by_its_keepalive() {
    use crate::connection::classify::is_connection_failure;

    let (addr, mut accepted) = h2_server(window(64 * 1024), true).await;
    let settings = ConnectionSettings::default()
        .with_keepalive(Duration::from_millis(100), Duration::from_millis(100));
    let direct = direct_to(addr, settings);
    let call = tokio::spawn(direct.clone().send(request()));
    let _held = accepted.recv().await.expect("a request");
    let answer = tokio::time::timeout(BOUND, call)
        .await
        .expect("the call ends although the server never answers")
        .expect("call task");
    let error = answer.expect_err("no answer");
    let status = Status::from_error(error);
    assert!(is_connection_failure(&status), "{status:?}");
    let deadline = tokio::time::Instant::now() + BOUND;
    while direct.shared.is_open() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead connection is not kept"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn calls_past_the_servers_stream_limit_wait_for_a_stream_and_are_answered() {
    let mut server = h2::server::Builder::new();
    server.max_concurrent_streams(1);
    let (addr, mut accepted) = h2_server(server, false).await;
    let direct = direct_to(addr, ConnectionSettings::default());
    // The first call makes the connection, and the server's limit is known.
    let first = tokio::spawn(direct.clone().send(request()));
    let (_, mut respond) = accepted.recv().await.expect("a request");
    respond
        .send_response(http::Response::new(()), true)
        .expect("answered");
    answered_ok(first, "the first call ends").await;
    // Four at once: one stream at a time is open, the others wait for it.
    let calls: Vec<_> = (0..4)
        .map(|_| tokio::spawn(direct.clone().send(request())))
        .collect();
    for _ in 0..4 {
        let (_, mut respond) = tokio::time::timeout(BOUND, accepted.recv())
            .await
            .expect("the next request arrives")
            .expect("a request");
        respond
            .send_response(http::Response::new(()), true)
            .expect("answered");
    }
    for call in calls {
        answered_ok(call, "every call ends").await;
    }
}

#[tokio::test]
async fn headers_http2_forbids_are_dropped_and_the_rest_sent() {
    let (addr, mut accepted) = h2_server(window(64 * 1024), false).await;
    let direct = direct_to(addr, ConnectionSettings::default());
    let mut call = request();
    for (name, value) in [
        ("connection", "close"),
        ("keep-alive", "5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("te", "gzip"),
        ("x-kept", "1"),
    ] {
        call.headers_mut().insert(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
    }
    let answer = tokio::spawn(direct.send(call));
    let (request, mut respond) = tokio::time::timeout(BOUND, accepted.recv())
        .await
        .expect("the request is sent")
        .expect("a request");
    let names: Vec<&str> = request.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-kept"], "{:?}", request.headers());
    respond
        .send_response(http::Response::new(()), true)
        .expect("answered");
    answered_ok(answer, "the call ends").await;
}

#[test]
fn a_te_of_trailers_is_kept() {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    http2::strip_connection_headers(&mut headers);
    assert_eq!(headers.len(), 2, "{headers:?}");
}

/// A server that answers the client's first request with a GOAWAY naming no
/// stream as processed (the request refused), and keeps the connection open.
async fn refusing_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        // The server's SETTINGS (empty).
        socket
            .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .expect("settings");
        // The client's preface, then its frames until a HEADERS frame.
        let (mut read, mut at, mut seen) = (Vec::new(), 24, false);
        while !seen {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the client closed before its request");
            read.extend_from_slice(&chunk[..n]);
            while read.len() >= at + 9 {
                let len = usize::from(read[at]) << 16
                    | usize::from(read[at + 1]) << 8
                    | usize::from(read[at + 2]);
                seen |= read[at + 3] == 1;
                at += 9 + len;
            }
        }
        // SETTINGS ACK, then GOAWAY: last stream 0, NO_ERROR.
        let mut frames = vec![0, 0, 0, 4, 1, 0, 0, 0, 0];
        frames.extend_from_slice(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        socket.write_all(&frames).await.expect("goaway");
        let mut rest = [0u8; 4096];
        while socket.read(&mut rest).await.is_ok_and(|n| n > 0) {}
    });
    addr
}

#[tokio::test]
async fn a_request_the_server_refuses_by_goaway_fails_unavailable() {
    use crate::connection::classify::is_transport_failure;

    let direct = direct_to(refusing_server().await, ConnectionSettings::default());
    let answer = tokio::time::timeout(BOUND, direct.send(request()))
        .await
        .expect("the call ends");
    let status = Status::from_error(answer.expect_err("refused"));
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("going away"), "{status:?}");
    assert!(is_transport_failure(&status), "{status:?}");
}

/// A server's side of a connection that counts the client's PING frames
/// (not their acknowledgements) as it reads them.
struct CountingPings {
    io: tokio::net::TcpStream,
    read: Vec<u8>,
    /// Where the next frame header starts in `read` (after the preface).
    at: usize,
    pings: tokio::sync::watch::Sender<usize>,
}

impl tokio::io::AsyncRead for CountingPings {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let this = &mut *self;
        this.read.extend_from_slice(&buf.filled()[before..]);
        while this.read.len() >= this.at + 9 {
            let header = &this.read[this.at..this.at + 9];
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            if header[3] == 6 && header[4] & 1 == 0 {
                this.pings.send_modify(|n| *n += 1);
            }
            this.at += 9 + len;
        }
        polled
    }
}

impl tokio::io::AsyncWrite for CountingPings {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_call_outlasting_several_keepalive_pings_that_are_answered_is_answered() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (pings, mut counted) = tokio::sync::watch::channel(0usize);
    let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (io, _) = listener.accept().await.expect("accept");
        let io = CountingPings {
            io,
            read: Vec::new(),
            at: 24,
            pings,
        };
        let mut connection = h2::server::handshake(io).await.expect("server handshake");
        // Polled throughout: PINGs are answered.
        while let Some(Ok(request)) = connection.accept().await {
            let _ = tx.send(request);
        }
    });
    let settings = ConnectionSettings::default()
        .with_keepalive(Duration::from_millis(20), Duration::from_secs(5));
    let direct = direct_to(addr, settings);
    let call = tokio::spawn(direct.clone().send(request()));
    let (_, mut respond) = accepted.recv().await.expect("a request");
    // The call stays open while the client pings three times.
    tokio::time::timeout(BOUND, counted.wait_for(|n| *n >= 3))
        .await
        .expect("PINGs while the stream is open")
        .expect("server alive");
    respond
        .send_response(http::Response::new(()), true)
        .expect("answered");
    answered_ok(call, "the call ends").await;
    assert!(direct.shared.is_open(), "the connection is kept");
}
