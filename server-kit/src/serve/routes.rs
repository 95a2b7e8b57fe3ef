//! The services a server serves, with their names for the health service.

use std::convert::Infallible;
use std::fmt;

use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

/// The tonic services to serve, and their names: each is reported `SERVING` by
/// the health service while the server is up, `NOT_SERVING` during shutdown.
///
/// Built like tonic's `Routes`. A single generated server (`EchoServer::new(..)`)
/// converts into `Routes`, so every function taking `impl Into<Routes>` takes
/// it directly; a `tonic::service::Routes` is taken by
/// [`from_tonic`](Self::from_tonic).
#[derive(Default)]
pub struct Routes {
    routes: tonic::service::Routes,
    names: Vec<&'static str>,
}

impl Routes {
    /// Routes serving `service`.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self::default().add_service(service)
    }

    /// Adds `service` (a generated tonic server such as `EchoServer::new(..)`).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(service);
        if !self.names.contains(&S::NAME) {
            self.names.push(S::NAME);
        }
        self
    }

    /// Routes serving a `tonic::service::Routes` as it is. Only the overall
    /// health (service `""`) is reported for them, as their names cannot be
    /// read back.
    pub fn from_tonic(routes: tonic::service::Routes) -> Self {
        Self {
            routes,
            names: Vec::new(),
        }
    }

    /// The names of the services, e.g. `echo.v1.Echo`.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    pub(crate) fn into_parts(self) -> (tonic::service::Routes, Vec<&'static str>) {
        (self.routes, self.names)
    }
}

impl<S> From<S> for Routes
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    fn from(service: S) -> Self {
        Self::new(service)
    }
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("names", &self.names)
            .finish()
    }
}
