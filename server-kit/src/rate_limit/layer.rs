//! The tower middleware: [`RateLimitLayer`] → [`RateLimit`] → [`ResponseFuture`].

use std::fmt;
use std::task::{Context, Poll};

use governor::clock::MonotonicClock;
use tower::{Layer, Service};
use tracing::debug;

use super::{is_exempt, LimiterClock, RateLimits};
use crate::ResponseFuture;

/// Applies [`RateLimits`] to a service: `Server::builder().layer(..)` in tonic.
pub struct RateLimitLayer<C: LimiterClock = MonotonicClock> {
    limits: RateLimits<C>,
}

impl<C: LimiterClock> RateLimitLayer<C> {
    /// A layer checking calls against `limits` (shared: later changes apply).
    pub fn new(limits: RateLimits<C>) -> Self {
        Self { limits }
    }
}

impl<C: LimiterClock> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            limits: self.limits.clone(),
        }
    }
}

impl<C: LimiterClock> fmt::Debug for RateLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limits", &self.limits)
            .finish()
    }
}

impl<S, C: LimiterClock> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// A service whose calls are checked against [`RateLimits`] first; a refused
/// call is answered `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms` and never
/// reaches the inner service.
pub struct RateLimit<S, C: LimiterClock = MonotonicClock> {
    inner: S,
    limits: RateLimits<C>,
}

impl<S: Clone, C: LimiterClock> Clone for RateLimit<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limits: self.limits.clone(),
        }
    }
}

impl<S: fmt::Debug, C: LimiterClock> fmt::Debug for RateLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limits", &self.limits)
            .finish()
    }
}

impl<S, C, ReqBody, ResBody> Service<http::Request<ReqBody>> for RateLimit<S, C>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    C: LimiterClock,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if is_exempt(request.uri().path()) {
            return ResponseFuture::called(self.inner.call(request));
        }
        match self.limits.check(&request) {
            Ok(()) => ResponseFuture::called(self.inner.call(request)),
            Err(refusal) => {
                if let crate::Error::RateLimited { limit, retry_after } = &refusal {
                    debug!(method = request.uri().path(), %limit, ?retry_after, "rate limited");
                }
                ResponseFuture::refused(refusal)
            }
        }
    }
}
