//! [`Outbound`]: a channel request as its attempts send it, and [`Raw`], the
//! way a strategy sends it.

use std::sync::Arc;

use http::uri::PathAndQuery;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::replay::Replay;
use crate::call::Rpc;
use crate::connection::Connection;

/// One request of a [`ClusterChannel`](super::ClusterChannel): its head (shared
/// by the attempts) and its replayable body. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Outbound {
    head: Arc<Head>,
    body: Replay,
}

#[derive(Clone, Debug)]
struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Outbound {
    /// The request of `parts` and `body`, its body kept up to `retry_buffer`
    /// bytes for sending it again.
    pub(crate) fn new(parts: http::request::Parts, body: Body, retry_buffer: usize) -> Self {
        Self {
            head: Arc::new(Head {
                method: parts.method,
                uri: parts.uri,
                version: parts.version,
                headers: parts.headers,
            }),
            body: Replay::new(body, retry_buffer),
        }
    }

    /// The HTTP request of one attempt: the caller's headers with the
    /// attempt's `metadata` set over them, and the body from its beginning.
    fn into_http(self, metadata: MetadataMap) -> http::Request<Body> {
        let head = Arc::try_unwrap(self.head).unwrap_or_else(|shared| (*shared).clone());
        let mut request = http::Request::new(Body::new(self.body.reader()));
        *request.method_mut() = head.method;
        *request.uri_mut() = head.uri;
        *request.version_mut() = head.version;
        let mut headers = head.headers;
        let mut last = None;
        for (name, value) in metadata.into_headers() {
            match name {
                Some(name) => {
                    headers.insert(&name, value);
                    last = Some(name);
                }
                None => {
                    if let Some(name) = &last {
                        headers.append(name, value);
                    }
                }
            }
        }
        *request.headers_mut() = headers;
        request
    }
}

/// A channel request's method: sends the request as it came, its body
/// replayed, and answers at the response headers (where the call commits).
#[derive(Debug)]
pub(crate) struct Raw {
    path: PathAndQuery,
}

impl Raw {
    /// The method at `path` (`/echo.v1.Echo/Say`).
    pub(crate) fn new(path: PathAndQuery) -> Self {
        Self { path }
    }
}

impl Rpc<Outbound, http::Response<Body>> for Raw {
    fn path(&self) -> &str {
        self.path.path()
    }

    async fn send(
        &self,
        connection: &Connection,
        request: tonic::Request<Outbound>,
    ) -> Result<tonic::Response<http::Response<Body>>, Status> {
        let (metadata, _, outbound) = request.into_parts();
        let body = outbound.body.clone();
        let response = connection.send(outbound.into_http(metadata)).await?;
        body.commit();
        Ok(tonic::Response::new(response))
    }

    fn resendable(&self, request: &Outbound) -> bool {
        request.body.replayable()
    }
}
