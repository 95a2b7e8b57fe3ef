//! The response future of the admission layers: the inner call, or a refusal
//! answered at once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tonic::Status;

use crate::Error;

pin_project! {
    /// The future of [`RateLimit`](crate::RateLimit),
    /// [`Shedding`](crate::shedding::Shedding) and
    /// [`BearerAuth`](crate::BearerAuth): the inner service's future when the
    /// call was admitted, otherwise the refusal as a ready gRPC response.
    ///
    /// # Panics
    ///
    /// When polled again after it completed with a refusal.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Called { #[pin] future: F },
        Refused { response: Option<http::Response<B>> },
    }
}

impl<F, B: Default> ResponseFuture<F, B> {
    pub(crate) fn called(future: F) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    pub(crate) fn refused(refusal: Error) -> Self {
        Self {
            state: State::Refused {
                response: Some(refusal_response(refusal)),
            },
        }
    }
}

/// The one place a refusal becomes a response: HTTP 200, `content-type:
/// application/grpc`, and the status (with its metadata, e.g.
/// `grpc-retry-pushback-ms`) in the headers of a trailers-only response.
/// A rate-limit refusal carries its [`Limit`](crate::Limit) in the response's
/// extensions, a shed call [`Shed`], for the layers outside to count.
fn refusal_response<B: Default>(refusal: Error) -> http::Response<B> {
    let limit = match &refusal {
        Error::RateLimited { limit, .. } => Some(*limit),
        _ => None,
    };
    let shed = matches!(refusal, Error::Overloaded { .. });
    let mut response = Status::from(refusal).into_http();
    if let Some(limit) = limit {
        response.extensions_mut().insert(limit);
    }
    if shed {
        response.extensions_mut().insert(Shed);
    }
    response
}

/// In the extensions of a response refused by load shedding, for the layers
/// outside to count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shed;

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future } => future.poll(cx),
            StateProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
