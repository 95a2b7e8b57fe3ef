//! The tower middleware: [`ObserveLayer`] → [`Observe`] → [`ObserveFuture`],
//! with the response body wrapped in [`ObservedBody`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use registry_actor::metrics::code_name;
use tonic::transport::server::TcpConnectInfo;
use tonic::Code;
use tower::{Layer, Service};
use tracing::field::{display, Empty};
use tracing::Span;

use super::context;
use super::metrics::{MethodMetrics, MethodTable};
use crate::response::Shed;
use crate::{AuthenticatedCaller, Limit};

/// The header or trailer carrying a response's gRPC status.
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The metadata key a client names itself with (not authenticated: the
/// span's `caller` uses it only when no token named the caller).
const CALLER_KEY: &str = "x-caller";

/// Observes every request: see the [module docs](super).
#[derive(Debug, Clone, Default)]
pub(crate) struct ObserveLayer {
    methods: Arc<MethodTable>,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// The service of [`ObserveLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    methods: Arc<MethodTable>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Observe<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let metrics = self.methods.method(request.uri().path());
        // Text goes in as `Display`: a formatting subscriber writes it as it
        // is, where a `&str` would be escaped character by character.
        let span = tracing::info_span!(
            "request",
            method = %request.uri().path(),
            caller = Empty,
            code = Empty,
        );
        if !span.is_disabled() {
            if let Some(caller) = caller_of(&request) {
                span.record("caller", display(caller.as_str()));
            }
            context::set_parent(&span, request.headers());
        }
        let future = span.in_scope(|| self.inner.call(request));
        ObserveFuture {
            future,
            end: Some(End {
                metrics,
                span,
                started,
            }),
        }
    }
}

/// Who a request says it comes from: the caller its token authenticated,
/// else its `x-caller` metadata, else its peer address.
fn caller_of<B>(request: &http::Request<B>) -> Option<String> {
    if let Some(caller) = request.extensions().get::<AuthenticatedCaller>() {
        return Some(caller.name().to_owned());
    }
    if let Some(named) = request
        .headers()
        .get(CALLER_KEY)
        .and_then(|v| v.to_str().ok())
    {
        return Some(named.to_owned());
    }
    let peer = request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)?;
    Some(peer.ip().to_string())
}

/// What is recorded when a request ends.
#[derive(Debug)]
struct End {
    metrics: Arc<MethodMetrics>,
    span: Span,
    started: Instant,
}

impl End {
    fn record(self, code: Code) {
        self.metrics
            .request(code, self.started.elapsed().as_secs_f64());
        self.span.record("code", display(code_name(code)));
    }
}

/// The gRPC status in `headers`, if they carry one.
fn status_in(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get(&GRPC_STATUS)?;
    let code = std::str::from_utf8(value.as_bytes())
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(code))
}

pin_project! {
    /// The inner future, polled in the request's span; its response body
    /// takes over the recording of the request's end.
    #[derive(Debug)]
    pub(crate) struct ObserveFuture<F> {
        #[pin]
        future: F,
        end: Option<End>,
    }
}

impl<F, B, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<ObservedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = match this.end.as_ref() {
            Some(end) => end.span.in_scope(|| this.future.poll(cx)),
            None => this.future.poll(cx),
        };
        let response = match ready!(polled) {
            Ok(response) => response,
            Err(e) => {
                if let Some(end) = this.end.take() {
                    end.record(Code::Unknown);
                }
                return Poll::Ready(Err(e));
            }
        };
        let mut end = this.end.take();
        if let (Some(limit), Some(end)) = (response.extensions().get::<Limit>(), &end) {
            end.metrics.rate_limited(*limit);
        }
        if let (Some(Shed), Some(end)) = (response.extensions().get::<Shed>(), &end) {
            end.metrics.shed();
        }
        // A trailers-only response (a refusal, an error) is over already.
        if let Some(code) = status_in(response.headers()) {
            if let Some(end) = end.take() {
                end.record(code);
            }
        }
        Poll::Ready(Ok(response.map(|inner| ObservedBody { inner, end })))
    }
}

pin_project! {
    /// A response body that records its request's end when the trailers
    /// carrying its status pass; ended without a status it counts as
    /// `UNKNOWN`, dropped before its end as `CANCELLED`.
    #[derive(Debug)]
    pub(crate) struct ObservedBody<B> {
        #[pin]
        inner: B,
        end: Option<End>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(end) = this.project().end.take() {
                end.record(Code::Cancelled);
            }
        }
    }
}

impl<B: Default> Default for ObservedBody<B> {
    /// An empty body recording nothing (a refusal built before the request
    /// was observed).
    fn default() -> Self {
        Self {
            inner: B::default(),
            end: None,
        }
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if this.end.is_some() {
            let code = match &frame {
                Some(Ok(frame)) => frame
                    .trailers_ref()
                    .map(|t| status_in(t).unwrap_or(Code::Unknown)),
                Some(Err(_)) => Some(Code::Unknown),
                None => Some(Code::Unknown),
            };
            if let Some(code) = code {
                if let Some(end) = this.end.take() {
                    end.record(code);
                }
            }
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
