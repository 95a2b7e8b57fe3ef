//! The tower middleware: [`SheddingLayer`] → [`Shedding`] → [`Measured`].

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::debug;

use super::{Admitted, Shedder};
use crate::rate_limit::is_exempt;
use crate::{Error, ResponseFuture};

/// Applies a [`Shedder`] to a service.
#[derive(Debug, Clone)]
pub struct SheddingLayer {
    shedder: Shedder,
}

impl SheddingLayer {
    /// A layer admitting calls through `shedder` (shared with its clones).
    pub fn new(shedder: Shedder) -> Self {
        Self { shedder }
    }
}

impl<S> Layer<S> for SheddingLayer {
    type Service = Shedding<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shedding {
            inner,
            shedder: self.shedder.clone(),
        }
    }
}

/// A service whose calls above the adaptive in-flight limit are answered
/// `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms` and never reach the inner
/// service.
#[derive(Debug, Clone)]
pub struct Shedding<S> {
    inner: S,
    shedder: Shedder,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Shedding<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Measured<S::Future>, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if !self.shedder.enabled() || is_exempt(request.uri().path()) {
            return ResponseFuture::called(Measured::new(self.inner.call(request), None));
        }
        match self.shedder.admit() {
            Ok(admitted) => {
                ResponseFuture::called(Measured::new(self.inner.call(request), Some(admitted)))
            }
            Err(refusal) => {
                if let Error::Overloaded {
                    in_flight, limit, ..
                } = &refusal
                {
                    debug!(method = request.uri().path(), in_flight, limit, "shed");
                }
                ResponseFuture::refused(refusal)
            }
        }
    }
}

pin_project! {
    /// The future of an admitted call: in flight until it completes or is
    /// dropped; a completed call's latency feeds the limit.
    #[derive(Debug)]
    pub struct Measured<F> {
        #[pin]
        future: F,
        admitted: Option<Admitted>,
    }
}

impl<F> Measured<F> {
    fn new(future: F, admitted: Option<Admitted>) -> Self {
        Self { future, admitted }
    }
}

impl<F: Future> Future for Measured<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.future.poll(cx));
        if let Some(admitted) = this.admitted.take() {
            admitted.finish();
        }
        Poll::Ready(output)
    }
}
