//! Accepted connections that can be cancelled all at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The cancel switch of every connection of one server. Dropping it cancels
/// them too (the server is gone).
#[derive(Debug)]
pub(crate) struct Connections {
    cancel: watch::Sender<bool>,
    /// Set before `cancel` is sent: what a stream reads, without a lock, to
    /// tell whether it was cancelled.
    cancelled: Arc<AtomicBool>,
}

impl Connections {
    pub(crate) fn new() -> Self {
        Self {
            cancel: watch::channel(false).0,
            cancelled: Arc::default(),
        }
    }

    /// Wraps an accepted stream so that [`cancel`](Self::cancel) closes it.
    pub(crate) fn wrap(&self, stream: TcpStream) -> ConnStream {
        let mut cancelled = self.cancel.subscribe();
        ConnStream {
            inner: stream,
            cancelled: Box::pin(async move {
                let _ = cancelled.wait_for(|c| *c).await;
            }),
            flag: self.cancelled.clone(),
            registered: None,
            is_cancelled: false,
        }
    }

    /// Fails every wrapped stream's reads and writes from now on.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.cancel.send_replace(true);
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// An accepted TCP stream that fails once its server cancels connections.
pub(crate) struct ConnStream {
    inner: TcpStream,
    /// Completes at the cancellation, waking the task that polled it last.
    cancelled: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Whether the connections were cancelled; set before the wake-up.
    flag: Arc<AtomicBool>,
    /// The waker `cancelled` was last polled with. Polling it takes the
    /// switch's lock, which every connection of the server shares, so a
    /// task already registered only reads `flag`.
    registered: Option<Waker>,
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
        if self.is_cancelled || self.flag.load(Ordering::Acquire) {
            self.is_cancelled = true;
            return true;
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return false;
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.is_cancelled = true;
            return true;
        }
        self.registered = Some(cx.waker().clone());
        false
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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A wrapped server-side stream and its client end.
    async fn pair(connections: &Connections) -> (ConnStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (connections.wrap(server), client)
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls a read of an idle stream twice with one task's waker (the
    /// second poll finds it registered), then lets `end` end the
    /// connections (answering the switch when it keeps it): the task must
    /// be woken, and the read then fail.
    async fn a_waiting_read_is_woken_and_fails_when(
        end: impl FnOnce(Connections) -> Option<Connections>,
    ) {
        let connections = Connections::new();
        let (mut stream, _client) = pair(&connections).await;
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut bytes = [0u8; 8];
        for _ in 0..2 {
            let mut buf = ReadBuf::new(&mut bytes);
            assert!(Pin::new(&mut stream)
                .poll_read(&mut cx, &mut buf)
                .is_pending());
        }
        let _kept = end(connections);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "woken once");
        let mut buf = ReadBuf::new(&mut bytes);
        match Pin::new(&mut stream).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted),
            other => panic!("expected an aborted read, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_read_waiting_on_an_idle_connection_is_woken_and_fails_at_a_cancellation() {
        a_waiting_read_is_woken_and_fails_when(|connections| {
            connections.cancel();
            Some(connections)
        })
        .await;
    }

    #[tokio::test]
    async fn a_read_waiting_on_an_idle_connection_is_woken_and_fails_when_the_switch_is_dropped() {
        a_waiting_read_is_woken_and_fails_when(|connections| {
            drop(connections);
            None
        })
        .await;
    }

    #[tokio::test]
    async fn every_read_and_write_after_a_cancellation_fails_at_once() {
        let connections = Connections::new();
        let (mut stream, _client) = pair(&connections).await;
        connections.cancel();
        let mut buf = [0u8; 8];
        let read = stream.read(&mut buf).await.expect_err("cancelled");
        assert_eq!(read.kind(), io::ErrorKind::ConnectionAborted);
        let write = tokio::io::AsyncWriteExt::write_all(&mut stream, b"x")
            .await
            .expect_err("cancelled");
        assert_eq!(write.kind(), io::ErrorKind::ConnectionAborted);
    }
}
