//! Accepted connections that can be cancelled all at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The cancel switch of every connection of one server.
#[derive(Debug)]
pub(crate) struct Connections {
    cancel: watch::Sender<bool>,
}

impl Connections {
    pub(crate) fn new() -> Self {
        Self {
            cancel: watch::channel(false).0,
        }
    }

    /// Wraps an accepted stream so that [`cancel`](Self::cancel) closes it.
    pub(crate) fn wrap(&self, stream: TcpStream) -> ConnStream {
        let mut cancelled = self.cancel.subscribe();
        ConnStream {
            inner: stream,
            cancelled: Box::pin(async move {
                // A dropped switch (the server is gone) cancels too.
                let _ = cancelled.wait_for(|c| *c).await;
            }),
            is_cancelled: false,
        }
    }

    /// Fails every wrapped stream's reads and writes from now on.
    pub(crate) fn cancel(&self) {
        self.cancel.send_replace(true);
    }
}

/// An accepted TCP stream that fails once its server cancels connections.
pub(crate) struct ConnStream {
    inner: TcpStream,
    cancelled: Pin<Box<dyn Future<Output = ()> + Send>>,
    is_cancelled: bool,
}

impl std::fmt::Debug for ConnStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnStream")
            .field("inner", &self.inner)
            .field("is_cancelled", &self.is_cancelled)
            .finish()
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection cancelled at the drain deadline",
    )
}

impl ConnStream {
    /// Registers for cancellation and says whether it happened. Only needed when
    /// the stream itself is pending: that is when the task would sleep.
    fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.is_cancelled && self.cancelled.as_mut().poll(cx).is_ready() {
            self.is_cancelled = true;
        }
        self.is_cancelled
    }
}

impl AsyncRead for ConnStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.is_cancelled {
            return Poll::Ready(Err(aborted()));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.poll_cancelled(cx) => Poll::Ready(Err(aborted())),
            other => other,
        }
    }
}

impl AsyncWrite for ConnStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.is_cancelled {
            return Poll::Ready(Err(aborted()));
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending if this.poll_cancelled(cx) => Poll::Ready(Err(aborted())),
            other => other,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.is_cancelled {
            return Poll::Ready(Err(aborted()));
        }
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending if this.poll_cancelled(cx) => Poll::Ready(Err(aborted())),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for ConnStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
