//! Noticing that a server is closing a node's connection: its GOAWAY frame,
//! or the end of the connection.
//!
//! A GOAWAY is seen only by the connection's task (h2's), which lets the
//! calls in flight finish and ends; the next call connects afresh (refused,
//! when the server is going down). So the channel of each node is made with a
//! connector of ours ([`WatchingConnector`]) whose connections ([`Watched`],
//! above TLS when there is TLS) read the frames the server sends as they
//! pass (the 9-byte frame headers only, see [`Frames`]) and report the first
//! GOAWAY — or, when none came, the end of the connection (end of stream or a
//! read error) — once, as [`Report::going_away`]. The picker then stops
//! picking the node until its server answers on a fresh connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::report::Report;
use super::tcp::{self, NodeIo};
use super::tls::ClientTls;

/// The HTTP/2 frame type of GOAWAY.
const GOAWAY: u8 = 0x7;
/// The length of an HTTP/2 frame header.
const HEADER: usize = 9;

/// Follows the HTTP/2 frames a server sends on a connection (a server sends
/// nothing before its first frame), whatever the sizes of the
/// reads: a 9-byte header, then as many payload bytes as it says.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    header: [u8; HEADER],
    have: usize,
    skip: usize,
}

impl Frames {
    /// Takes the next bytes read; answers whether a GOAWAY frame's header
    /// was completed among them.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut goaway = false;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == HEADER {
                self.have = 0;
                let [a, b, c, kind, ..] = self.header;
                self.skip = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                goaway |= kind == GOAWAY;
            }
        }
        goaway
    }
}

/// A connection that reports, once, that its server is closing it: a GOAWAY
/// frame read, or the end of the stream.
pub(crate) struct Watched<T> {
    io: T,
    frames: Frames,
    report: Arc<dyn Report>,
    told: bool,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("told", &self.told)
            .finish_non_exhaustive()
    }
}

impl<T> Watched<T> {
    /// Watches `io`, reporting to `report`.
    pub(crate) fn new(io: T, report: Arc<dyn Report>) -> Self {
        Self {
            io,
            frames: Frames::default(),
            report,
            told: false,
        }
    }

    fn tell(&mut self) {
        if !self.told {
            self.told = true;
            self.report.going_away();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if read.is_empty() {
                    if room {
                        this.tell();
                    }
                } else if !this.told && this.frames.feed(read) {
                    this.tell();
                }
            }
            Poll::Ready(Err(_)) => this.tell(),
            Poll::Pending => {}
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The connector of a node's channel: TCP to the URI's authority with
/// `TCP_NODELAY`, then the TLS handshake when there is TLS, all within the
/// connect timeout; each connection [`Watched`], reporting to `report`.
#[derive(Clone)]
pub(crate) struct WatchingConnector {
    report: Arc<dyn Report>,
    connect_timeout: Duration,
    tls: Option<ClientTls>,
}

impl std::fmt::Debug for WatchingConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchingConnector")
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl WatchingConnector {
    /// Connections made within `connect_timeout`, over `tls` when set, each
    /// reporting to `report`.
    pub(crate) fn new(
        report: Arc<dyn Report>,
        connect_timeout: Duration,
        tls: Option<ClientTls>,
    ) -> Self {
        Self {
            report,
            connect_timeout,
            tls,
        }
    }
}

impl tower::Service<http::Uri> for WatchingConnector {
    type Response = Watched<NodeIo>;
    type Error = io::Error;
    // Boxed: connecting is rare.
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (limit, report, tls) = (self.connect_timeout, self.report.clone(), self.tls.clone());
        Box::pin(async move {
            let connect = async {
                let stream = tcp::connect(&uri).await?;
                match &tls {
                    None => Ok::<_, io::Error>(NodeIo::Plain(stream)),
                    Some(tls) => Ok(NodeIo::Tls(Box::new(tls.handshake(&uri, stream).await?))),
                }
            };
            let io = tokio::time::timeout(limit, connect)
                .await
                .map_err(|_| tcp::timed_out(&uri, limit))??;
            Ok(Watched::new(io, report))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: u8, len: usize) -> Vec<u8> {
        let mut bytes = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ];
        // Payload bytes that look like frame headers of a GOAWAY.
        bytes.extend(std::iter::repeat_n(GOAWAY, len));
        bytes
    }

    struct Failures(std::sync::Mutex<Vec<String>>);

    impl Report for Failures {
        fn failed(&self, reason: &str) {
            self.0.lock().expect("lock").push(reason.to_owned());
        }
        fn succeeded(&self) {}
        fn serving(&self, _: bool) {}
        fn going_away(&self) {}
    }

    /// One call to the node at `addr` with `settings`, whose own timeout is
    /// far off (only the connect timeout can end it soon): its failure, and
    /// the failures reported.
    async fn call_failing(
        addr: std::net::SocketAddr,
        settings: crate::connection::ConnectionSettings,
    ) -> (tonic::Status, Vec<String>) {
        let node = registry_actor::Node::new("stuck", "svc", addr.to_string()).expect("node");
        let report = Arc::new(Failures(std::sync::Mutex::new(Vec::new())));
        let connection = crate::connection::Connection::new(
            node,
            settings,
            report.clone(),
            Arc::default(),
            Arc::default(),
            Arc::from([]),
        )
        .expect("a connection");
        let method = crate::Method::<(), ()>::from_static("/svc.Svc/Call");
        let mut request = tonic::Request::new(());
        request.set_timeout(Duration::from_secs(30));
        let status =
            tokio::time::timeout(Duration::from_secs(20), connection.call(&method, request))
                .await
                .expect("the call ends before the test's bound")
                .expect_err("no connection is made");
        let failures = report.0.lock().expect("lock").clone();
        (status, failures)
    }

    #[tokio::test]
    async fn a_cleartext_connect_that_hangs_fails_at_the_connect_timeout_as_a_connection_failure() {
        use crate::connection::classify::is_connection_failure;
        use crate::connection::ConnectionSettings;

        let (addr, _held, _listener) = crate::connection::testing::full_listener().await;
        let settings =
            ConnectionSettings::default().with_connect_timeout(Duration::from_millis(200));
        let (status, failures) = call_failing(addr, settings).await;
        assert!(is_connection_failure(&status), "{status:?}");
        assert!(
            format!("{status:?}").contains("within the connect timeout of 200ms"),
            "{status:?}"
        );
        assert_eq!(failures.len(), 1, "the failure is reported: {failures:?}");
    }

    #[tokio::test]
    async fn a_short_tls_connection_whose_handshake_hangs_fails_at_the_connect_timeout() {
        use crate::connection::ConnectionSettings;

        // The kernel takes the TCP connection (nothing accepts it) and the
        // TLS handshake is never answered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let settings = ConnectionSettings::default()
            .with_connect_timeout(Duration::from_millis(200))
            .with_short_connection(true)
            .with_tls(Some(crate::connection::testing::client_tls()));
        let (status, failures) = call_failing(addr, settings).await;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert_eq!(failures.len(), 1, "the failure is reported: {failures:?}");
    }

    #[test]
    fn a_goaway_after_settings_and_data_is_seen_once_its_header_is_complete() {
        let mut frames = Frames::default();
        assert!(!frames.feed(&frame(0x4, 6)), "SETTINGS");
        assert!(!frames.feed(&frame(0x0, 100)), "DATA full of 0x7");
        let goaway = frame(GOAWAY, 8);
        assert!(!frames.feed(&goaway[..4]), "header not complete");
        assert!(frames.feed(&goaway[4..]), "GOAWAY");
        assert!(!frames.feed(&frame(0x6, 8)), "PING after it");
    }

    proptest! {
        #[test]
        fn goaway_is_found_whatever_the_read_sizes(
            kinds in proptest::collection::vec((0u8..10, 0usize..300), 1..20),
            cuts in proptest::collection::vec(1usize..64, 1..200),
        ) {
            let bytes: Vec<u8> = kinds.iter().flat_map(|&(k, len)| frame(k, len)).collect();
            let expected = kinds.iter().any(|&(k, _)| k == GOAWAY);
            let mut frames = Frames::default();
            let (mut rest, mut seen, mut cut) = (&bytes[..], false, cuts.iter().cycle());
            while !rest.is_empty() {
                let n = (*cut.next().expect("cycles")).min(rest.len());
                seen |= frames.feed(&rest[..n]);
                rest = &rest[n..];
            }
            prop_assert_eq!(seen, expected);
        }
    }
}
