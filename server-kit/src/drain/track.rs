//! Counting calls in flight: `TrackLayer` → `Track` → `TrackFuture`, with the
//! response body wrapped in `TrackedBody`.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use metrics::Gauge;
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tower::{Layer, Service};

/// Counters of calls in flight and completed; the calls in flight are also
/// the `grpc_cluster_server_in_flight` gauge.
#[derive(Debug)]
pub(crate) struct InFlight {
    in_flight: AtomicU64,
    completed: AtomicU64,
    draining: AtomicBool,
    idle: Notify,
    gauge: Gauge,
}

impl InFlight {
    /// No call yet; the gauge is registered with the recorder installed now.
    pub(crate) fn new() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            idle: Notify::new(),
            gauge: metrics::gauge!(registry_actor::metrics::SERVER_IN_FLIGHT),
        }
    }

    /// Calls that reached the service and whose response is not finished.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Calls finished (answered, or dropped) since the start.
    pub(crate) fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// From now on, the last call to finish wakes [`wait_idle`](Self::wait_idle).
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Waits until no call is in flight, at most `timeout`; returns whether none
    /// is. Needs [`start_draining`](Self::start_draining) first.
    pub(crate) async fn wait_idle(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let mut notified = pin!(self.idle.notified());
                notified.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    fn begin(self: &Arc<Self>) -> Guard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.gauge.increment(1.0);
        Guard(self.clone())
    }
}

/// One call in flight; finishing it is dropping it.
#[derive(Debug)]
struct Guard(Arc<InFlight>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.completed.fetch_add(1, Ordering::AcqRel);
        self.0.gauge.decrement(1.0);
        let before = self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        if before == 1 && self.0.draining.load(Ordering::Acquire) {
            self.0.idle.notify_waiters();
        }
    }
}

/// Counts the calls of the wrapped service in an [`InFlight`].
#[derive(Debug, Clone)]
pub(crate) struct TrackLayer {
    counters: Arc<InFlight>,
}

impl TrackLayer {
    pub(crate) fn new(counters: Arc<InFlight>) -> Self {
        Self { counters }
    }
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Track {
            inner,
            counters: self.counters.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Track<S> {
    inner: S,
    counters: Arc<InFlight>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Track<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let guard = self.counters.begin();
        TrackFuture {
            future: self.inner.call(request),
            guard: Some(guard),
        }
    }
}

pin_project! {
    /// The inner future; its response body takes over the call's guard.
    #[derive(Debug)]
    pub(crate) struct TrackFuture<F> {
        #[pin]
        future: F,
        guard: Option<Guard>,
    }
}

impl<F, B, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, guard })))
    }
}

pin_project! {
    /// A response body that keeps its call counted until it ends or is dropped.
    #[derive(Debug)]
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        guard: Option<Guard>,
    }
}

impl<B: Default> Default for TrackedBody<B> {
    /// An empty body counting nothing (a refusal built before the call counted).
    fn default() -> Self {
        Self {
            inner: B::default(),
            guard: None,
        }
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            // The body ended: the call is over even if hyper keeps the body a while.
            this.guard.take();
        }
        Poll::Ready(frame)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
