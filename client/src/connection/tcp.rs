//! TCP connections to nodes: [`connect`], and [`TcpConnector`] for tonic's
//! channels that carry one call.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A TCP connection to the authority of `uri`, with `TCP_NODELAY`, made
/// within `timeout` when there is one.
pub(crate) async fn connect(uri: &http::Uri, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let authority = uri
        .authority()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?
        .as_str();
    let connect = TcpStream::connect(authority);
    let stream = match timeout {
        None => connect.await?,
        Some(limit) => tokio::time::timeout(limit, connect).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection to {authority} within the connect timeout of {limit:?}"),
            )
        })??,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
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
        Box::pin(async move { connect(&uri, None).await.map(TokioIo::new) })
    }
}
