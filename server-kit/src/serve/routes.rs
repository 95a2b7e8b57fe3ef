//! The services a server serves, with their names for the health service.

use std::convert::Infallible;
use std::fmt;

use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use super::dispatch::Services;

/// The tonic services to serve, and their names: each is reported `SERVING` by
/// the health service while the server is up, `NOT_SERVING` during shutdown.
///
/// Built like tonic's `Routes`. A single generated server (`EchoServer::new(..)`)
/// converts into `Routes`, so every function taking `impl Into<Routes>` takes
/// it directly; a `tonic::service::Routes` is taken by
/// [`from_tonic`](Self::from_tonic).
///
/// A request goes straight to the service its path names
/// (`/package.Service/Method`), with no router in between. A path naming no
/// service added here goes to the tonic routes given to `from_tonic`; with
/// none, or when they do not know it either, it is answered `UNIMPLEMENTED`.
#[derive(Default)]
pub struct Routes {
    services: Services,
    fallback: tonic::service::Routes,
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
    /// A service added under a name already added replaces it.
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
        if !self.services.contains(S::NAME) {
            self.names.push(S::NAME);
        }
        self.services.insert(service);
        self
    }

    /// Routes serving a `tonic::service::Routes` as it is, behind the
    /// services added with [`add_service`](Self::add_service). Only the
    /// overall health (service `""`) is reported for them, as their names
    /// cannot be read back.
    pub fn from_tonic(routes: tonic::service::Routes) -> Self {
        Self {
            services: Services::default(),
            fallback: routes,
            names: Vec::new(),
        }
    }

    /// The names of the services, e.g. `echo.v1.Echo`.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// The services called by name, the tonic routes behind them, and the
    /// names.
    pub(crate) fn into_parts(self) -> (Services, tonic::service::Routes, Vec<&'static str>) {
        (self.services, self.fallback, self.names)
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
