//! Calling each request's service by the service name in its path.
//!
//! A request to `/package.Service/Method` goes straight to the service added
//! under `package.Service`: no router between them, and its request and
//! response bodies pass as they are. A path naming no added service goes to
//! the routes behind ([`Dispatch`]'s fallback, tonic's routes), which answer
//! `UNIMPLEMENTED` for a service they do not know.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::{Layer, Service, ServiceExt};

/// What a called service answers.
type Answer = Result<http::Response<Body>, Infallible>;

/// One service, type-erased: a call clones it and drives it to its answer.
type Call = Box<dyn Fn(http::Request<Body>) -> BoxFuture<'static, Answer> + Send + Sync>;

/// The services called directly, by name.
#[derive(Default)]
pub(crate) struct Services {
    by_name: foldhash::HashMap<&'static str, Call>,
}

impl Services {
    /// Adds `service` under its name; a service added before under the same
    /// name is replaced.
    pub(crate) fn insert<S>(&mut self, service: S)
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.by_name.insert(
            S::NAME,
            Box::new(move |request| Box::pin(service.clone().oneshot(request))),
        );
    }

    /// Whether a service is added under `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The service a request to `path` goes to: the one named by the path's
    /// first segment, when the path has a second.
    fn for_path(&self, path: &str) -> Option<&Call> {
        let (name, _method) = path.strip_prefix('/')?.split_once('/')?;
        self.by_name.get(name)
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.by_name.keys()).finish()
    }
}

/// Puts [`Dispatch`] in front of the routes it wraps.
#[derive(Debug, Clone)]
pub(crate) struct DispatchLayer {
    services: Arc<Services>,
}

impl DispatchLayer {
    pub(crate) fn new(services: Services) -> Self {
        Self {
            services: Arc::new(services),
        }
    }
}

impl<S> Layer<S> for DispatchLayer {
    type Service = Dispatch<S>;

    fn layer(&self, fallback: S) -> Self::Service {
        Dispatch {
            services: self.services.clone(),
            fallback,
        }
    }
}

/// Calls the service a request's path names, else the fallback.
///
/// Readiness is the fallback's: tonic's routes, and the generated servers
/// called directly, are always ready (a direct call still waits for its
/// service's readiness before calling it).
#[derive(Debug, Clone)]
pub(crate) struct Dispatch<S> {
    services: Arc<Services>,
    fallback: S,
}

impl<S> Service<http::Request<Body>> for Dispatch<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = DispatchFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.fallback.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.services.for_path(request.uri().path()) {
            Some(call) => DispatchFuture::Direct {
                future: call(request),
            },
            None => DispatchFuture::Fallback {
                future: self.fallback.call(request),
            },
        }
    }
}

pin_project! {
    /// The answer of a direct call or of the fallback.
    #[project = Projected]
    pub(crate) enum DispatchFuture<F> {
        /// A service called by name.
        Direct { future: BoxFuture<'static, Answer> },
        /// The fallback's call.
        Fallback { #[pin] future: F },
    }
}

impl<F> fmt::Debug for DispatchFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Direct { .. } => "DispatchFuture::Direct",
            Self::Fallback { .. } => "DispatchFuture::Fallback",
        })
    }
}

impl<F: Future<Output = Answer>> Future for DispatchFuture<F> {
    type Output = Answer;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        match self.project() {
            Projected::Direct { future } => future.as_mut().poll(cx),
            Projected::Fallback { future } => future.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service named `p.S` answering every call with its label and the
    /// path it saw, in headers.
    #[derive(Clone)]
    struct Named(&'static str);

    impl NamedService for Named {
        const NAME: &'static str = "p.S";
    }

    impl Service<http::Request<Body>> for Named {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Answer>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            std::future::ready(Ok(answer(self.0, request.uri().path())))
        }
    }

    fn answer(by: &str, path: &str) -> http::Response<Body> {
        http::Response::builder()
            .header("by", by)
            .header("path", path)
            .body(Body::empty())
            .expect("a valid response")
    }

    /// Who answered a request to `path` through `services`, and the path it
    /// saw.
    async fn answered(services: Services, path: &str) -> (String, String) {
        let fallback = tower::service_fn(|request: http::Request<Body>| async move {
            Ok::<_, Infallible>(answer("fallback", request.uri().path()))
        });
        let dispatch = DispatchLayer::new(services).layer(fallback);
        let request = http::Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("a valid request");
        let response = dispatch.oneshot(request).await.expect("infallible");
        let header = |name: &str| response.headers()[name].to_str().expect("ASCII").to_owned();
        (header("by"), header("path"))
    }

    #[tokio::test]
    async fn a_path_naming_an_added_service_goes_to_it_and_any_other_to_the_fallback() {
        for (path, by) in [
            ("/p.S/Method", "p.S"),
            ("/p.S/", "p.S"),
            ("/p.S/Method/more", "p.S"),
            ("/p.S", "fallback"),
            ("/p.Other/Method", "fallback"),
            ("/p.S.Longer/Method", "fallback"),
            ("/", "fallback"),
        ] {
            let mut services = Services::default();
            services.insert(Named("p.S"));
            let seen = answered(services, path).await;
            assert_eq!(seen, (by.to_owned(), path.to_owned()), "{path}");
        }
    }

    #[tokio::test]
    async fn a_service_added_under_a_name_already_added_replaces_the_first() {
        let mut services = Services::default();
        services.insert(Named("first"));
        services.insert(Named("second"));
        assert_eq!(format!("{services:?}"), r#"{"p.S"}"#);
        let (by, _) = answered(services, "/p.S/Method").await;
        assert_eq!(by, "second");
    }
}
