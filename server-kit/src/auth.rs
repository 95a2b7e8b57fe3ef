//! Optional bearer-token authentication: [`BearerAuthLayer`] → [`BearerAuth`] →
//! [`ResponseFuture`](crate::ResponseFuture).
//!
//! With tokens configured (`server.token`, `[server.auth.callers]`), every call
//! must carry `authorization: Bearer <token>` with one of them; any other call
//! is answered `UNAUTHENTICATED` without reaching the service or taking a
//! rate-limit token. A caller's token names the call's caller (an
//! [`AuthenticatedCaller`] in the request's extensions), which per-caller limits
//! count against. The given token is compared with every configured one, each
//! comparison taking the same time wherever the first difference is. The gRPC
//! health service is exempt. Without tokens the layer lets everything through.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderValue;
use tower::{Layer, Service};

use crate::rate_limit::is_exempt;
use crate::{AuthConfig, Error, ResponseFuture};

/// The caller a call's bearer token names (`[server.auth.callers]`), put in the
/// request's extensions by [`BearerAuth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedCaller(HeaderValue);

impl AuthenticatedCaller {
    /// The caller's name.
    pub fn name(&self) -> &str {
        // Names are validated visible ASCII.
        self.0.to_str().unwrap_or_default()
    }

    pub(crate) fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

/// One accepted `Bearer <token>` and the caller it names, if any.
struct Accepted {
    expected: Box<[u8]>,
    caller: Option<AuthenticatedCaller>,
}

/// Checks the bearer token of every call (`server.token`,
/// `[server.auth.callers]`).
///
/// With tokens, every call must carry `authorization: Bearer <token>` with one
/// of them; any other call is answered `UNAUTHENTICATED` without reaching the
/// service or taking a rate-limit token. A caller's token puts an
/// [`AuthenticatedCaller`] in the request's extensions. The comparison takes
/// the same time wherever the first difference is. The gRPC health service is
/// exempt. Without tokens the layer lets everything through.
#[derive(Clone)]
pub struct BearerAuthLayer {
    /// Empty to let everything through.
    accepted: Arc<[Accepted]>,
}

impl BearerAuthLayer {
    /// A layer requiring `token`, or letting everything through for `None`.
    pub fn new(token: Option<&str>) -> Self {
        Self::with_callers(token, &AuthConfig::default())
    }

    /// A layer accepting `token` (no caller name) and each caller's token of
    /// `auth` (naming that caller); letting everything through when there is
    /// none. Caller names that are not valid metadata values are skipped
    /// (validation refuses them first).
    pub fn with_callers(token: Option<&str>, auth: &AuthConfig) -> Self {
        let bearer = |t: &str| format!("Bearer {t}").into_bytes().into_boxed_slice();
        let server = token.map(|t| Accepted {
            expected: bearer(t),
            caller: None,
        });
        let callers = auth.callers().iter().filter_map(|(name, token)| {
            Some(Accepted {
                expected: bearer(token.expose()),
                caller: Some(AuthenticatedCaller(HeaderValue::from_str(name).ok()?)),
            })
        });
        Self {
            accepted: server.into_iter().chain(callers).collect(),
        }
    }
}

impl fmt::Debug for BearerAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("tokens", &self.accepted.len())
            .finish()
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            accepted: self.accepted.clone(),
        }
    }
}

/// A service whose calls must carry the bearer token; see
/// [`BearerAuthLayer`].
#[derive(Clone)]
pub struct BearerAuth<S> {
    inner: S,
    accepted: Arc<[Accepted]>,
}

impl<S: fmt::Debug> fmt::Debug for BearerAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("tokens", &self.accepted.len())
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

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        if !self.accepted.is_empty() {
            let given = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map_or(&[][..], HeaderValue::as_bytes);
            match find_constant_time(&self.accepted, given) {
                Some(accepted) => {
                    if let Some(caller) = &accepted.caller {
                        request.extensions_mut().insert(caller.clone());
                    }
                }
                None if is_exempt(request.uri().path()) => {}
                None => return ResponseFuture::refused(Error::Unauthenticated),
            }
        }
        ResponseFuture::called(self.inner.call(request))
    }
}

/// The entry whose token is `given`, comparing with every entry whatever
/// matched.
fn find_constant_time<'a>(accepted: &'a [Accepted], given: &[u8]) -> Option<&'a Accepted> {
    accepted.iter().fold(None, |found, a| {
        let matches = constant_time_eq(given, &a.expected);
        found.or(matches.then_some(a))
    })
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
