//! Optional bearer-token authentication: [`BearerAuthLayer`] → [`BearerAuth`] →
//! [`ResponseFuture`](crate::ResponseFuture).
//!
//! With a token configured (`server.token`), every call must carry
//! `authorization: Bearer <token>`; any other call is answered `UNAUTHENTICATED`
//! without reaching the service or taking a rate-limit token. The comparison
//! takes the same time wherever the first difference is. The gRPC health
//! service is exempt. Without a token the layer lets everything through.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::rate_limit::is_exempt;
use crate::{Error, ResponseFuture};

/// Checks the bearer token of every call (`server.token`).
///
/// With a token, every call must carry `authorization: Bearer <token>`; any
/// other call is answered `UNAUTHENTICATED` without reaching the service or
/// taking a rate-limit token. The comparison takes the same time wherever the
/// first difference is. The gRPC health service is exempt. Without a token the
/// layer lets everything through.
#[derive(Clone)]
pub struct BearerAuthLayer {
    /// `Bearer <token>`, or `None` to let everything through.
    expected: Option<Arc<[u8]>>,
}

impl BearerAuthLayer {
    /// A layer requiring `token`, or letting everything through for `None`.
    pub fn new(token: Option<&str>) -> Self {
        Self {
            expected: token.map(|t| format!("Bearer {t}").into_bytes().into()),
        }
    }
}

impl fmt::Debug for BearerAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("enabled", &self.expected.is_some())
            .finish()
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            expected: self.expected.clone(),
        }
    }
}

/// A service whose calls must carry the bearer token; see
/// [`BearerAuthLayer`].
#[derive(Clone)]
pub struct BearerAuth<S> {
    inner: S,
    expected: Option<Arc<[u8]>>,
}

impl<S: fmt::Debug> fmt::Debug for BearerAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("enabled", &self.expected.is_some())
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for BearerAuth<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
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
        if let Some(expected) = &self.expected {
            let given = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes);
            let ok = given.is_some_and(|g| constant_time_eq(g, expected));
            if !ok && !is_exempt(request.uri().path()) {
                return ResponseFuture::refused(Error::Unauthenticated);
            }
        }
        ResponseFuture::called(self.inner.call(request))
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"", b"Bearer abc"));
    }
}
