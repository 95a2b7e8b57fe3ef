//! Ending health `Watch` streams when the drain starts.
//!
//! A `grpc.health.v1.Health/Watch` call streams for as long as its client
//! stays, so tonic's graceful shutdown would wait for it until the drain
//! deadline and then cancel it. [`EndWatches`] wraps the health service: once
//! [`DrainSignal::start`] is called (after health went `NOT_SERVING`), each
//! Watch stream sends what it still has ready — the `NOT_SERVING` update —
//! and ends with `UNAVAILABLE`, so the drain waits only for real calls.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::server::NamedService;
use tonic::{Code, Status};
use tower::Service;

/// The path suffix of the health service's streaming method.
const WATCH_METHOD: &str = "/Watch";

/// Starts the end of every health Watch stream of one server.
#[derive(Debug)]
pub(crate) struct DrainSignal(watch::Sender<bool>);

impl DrainSignal {
    pub(crate) fn new() -> Self {
        Self(watch::channel(false).0)
    }

    /// Wraps the health service so that its Watch streams end on [`start`](Self::start).
    pub(crate) fn end_watches<S>(&self, health: S) -> EndWatches<S> {
        EndWatches {
            inner: health,
            drain: self.0.subscribe(),
        }
    }

    /// Ends every Watch stream, now and later.
    pub(crate) fn start(&self) {
        self.0.send_replace(true);
    }
}

/// The health service whose Watch streams end when the drain starts.
#[derive(Debug, Clone)]
pub(crate) struct EndWatches<S> {
    inner: S,
    drain: watch::Receiver<bool>,
}

impl<S: NamedService> NamedService for EndWatches<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for EndWatches<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let watching = request.uri().path().ends_with(WATCH_METHOD);
        let drain = self.drain.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if !watching {
                return Ok(response);
            }
            Ok(response.map(|inner| {
                Body::new(UntilDrain {
                    inner,
                    drain: Box::pin(async move {
                        let mut drain = drain;
                        // A dropped sender (the server gone) ends the stream too.
                        let _ = drain.wait_for(|draining| *draining).await;
                    }),
                    ended: false,
                })
            }))
        })
    }
}

/// A Watch response body that ends with `UNAVAILABLE` once the drain started
/// and nothing more is ready.
struct UntilDrain {
    inner: Body,
    drain: Pin<Box<dyn Future<Output = ()> + Send>>,
    ended: bool,
}

impl HttpBody for UntilDrain {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        // What is ready goes first: the NOT_SERVING update precedes the end.
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if frame.is_none() {
                self.ended = true;
            }
            return Poll::Ready(frame);
        }
        match self.drain.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.ended = true;
                Poll::Ready(Some(Ok(Frame::trailers(shutting_down()))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The trailers of a stream ended by the shutdown: `UNAVAILABLE`.
fn shutting_down() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::with_capacity(2);
    trailers.insert(
        "grpc-status",
        http::HeaderValue::from(Code::Unavailable as i32),
    );
    trailers.insert(
        "grpc-message",
        http::HeaderValue::from_static("the%20server%20is%20shutting%20down"),
    );
    trailers
}
