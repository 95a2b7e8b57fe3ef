//! The user's tower layers and tonic server options, as a [`ServeBuilder`]
//! holds them until the server starts.
//!
//! [`ServeBuilder`]: super::ServeBuilder

use std::convert::Infallible;
use std::sync::Arc;

use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::transport::Server;
use tonic::Status;
use tower::util::{BoxCloneSyncService, Either, MapErr};
use tower::{BoxError, Layer, Service, ServiceExt};

/// The service a user layer wraps: the routes, and the user layers added
/// after it.
/// Its error comes only from a layer's `poll_ready` (an error of a call is
/// answered as a gRPC status).
pub type LayeredService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

type Wrap = dyn Fn(LayeredService) -> LayeredService + Send + Sync;

/// The user layers, the first added outermost. Without any, the routes are
/// served as they are (nothing boxed).
#[derive(Clone, Default)]
pub(crate) struct UserLayers(Vec<Arc<Wrap>>);

impl UserLayers {
    /// Adds `layer` inside the ones added before. An error of its service is
    /// answered as the gRPC status it converts to (`UNKNOWN` with its
    /// message unless it is a [`Status`]).
    pub(crate) fn push<L, S, B>(&mut self, layer: L)
    where
        L: Layer<LayeredService, Service = S> + Send + Sync + 'static,
        S: Service<http::Request<Body>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.0.push(Arc::new(move |inner| {
            let service = layer
                .layer(inner)
                .map_err(Into::<BoxError>::into)
                .map_future(|call| async move {
                    Ok::<_, BoxError>(match call.await {
                        Ok(response) => response.map(Body::new),
                        Err(e) => Status::from_error(e).into_http(),
                    })
                });
            BoxCloneSyncService::new(service)
        }));
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl<S> Layer<S> for UserLayers
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Service = Either<MapErr<S, fn(Infallible) -> BoxError>, LayeredService>;

    fn layer(&self, routes: S) -> Self::Service {
        if self.0.is_empty() {
            return Either::Left(MapErr::new(routes, BoxError::from));
        }
        let mut service = BoxCloneSyncService::new(routes.map_err(BoxError::from));
        for wrap in self.0.iter().rev() {
            service = wrap(service);
        }
        Either::Right(service)
    }
}

/// The user's changes to the tonic server builder.
pub(crate) type ServerOptions = Box<dyn FnOnce(Server) -> Server + Send>;
