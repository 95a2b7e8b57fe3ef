//! Connections to nodes: TCP ([`connect`]), TLS over it ([`NodeIo`]), and
//! [`TcpConnector`] for tonic's channels that carry one call.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::tls::TlsIo;

/// A TCP connection to the authority of `uri`, with `TCP_NODELAY`.
pub(crate) async fn connect(uri: &http::Uri) -> io::Result<TcpStream> {
    let authority = uri
        .authority()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
    let stream = TcpStream::connect(authority.as_str()).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `TimedOut`: no connection to `uri` within `limit`.
pub(crate) fn timed_out(uri: &http::Uri, limit: Duration) -> io::Error {
    let authority = uri.authority().map_or("", |a| a.as_str());
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no connection to {authority} within the connect timeout of {limit:?}"),
    )
}

/// A node's connection: TCP, or TLS over TCP.
#[derive(Debug)]
pub(crate) enum NodeIo {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS (boxed: its buffers are large).
    Tls(Box<TlsIo>),
}

impl AsyncRead for NodeIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls(io) => io.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NodeIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls(io) => io.poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Tls(io) => io.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            Self::Tls(io) => io.stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls(io) => Pin::new(&mut io.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls(io) => Pin::new(&mut io.stream).poll_shutdown(cx),
        }
    }
}

/// The connector of tonic's channels for a short connection's call, its
/// health watch, and a probe of a node whose server closed its connection:
/// plain TCP, with `TCP_NODELAY`. tonic bounds a connection
/// made through a connector given to it, TLS handshake included, by the
/// endpoint's connect timeout (with its own connector the timeout bounds the
/// TCP connect alone).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TcpConnector;

impl tower::Service<http::Uri> for TcpConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    // Boxed: connecting is rare next to a call.
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(async move { connect(&uri).await.map(TokioIo::new) })
    }
}
