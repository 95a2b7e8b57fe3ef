//! [`Outbound`]: a channel request as its attempts send it, and [`Raw`], the
//! way a strategy sends it.

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::HeaderValue;
use parking_lot::Mutex;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::replay::Replay;
use crate::call::{Rpc, GRPC_TIMEOUT_HEADER};
use crate::connection::Connection;

/// One request of a [`ClusterChannel`](super::ClusterChannel): its head and
/// its body, as its attempts send them, and the `grpc-timeout` of the
/// attempt at hand.
#[derive(Clone, Debug)]
pub(crate) struct Outbound {
    sent: Sent,
    /// The attempt's remaining time, set as the attempt is made; sent as its
    /// `grpc-timeout`, over the one the request came with.
    timeout: Option<HeaderValue>,
}

/// How a request is sent.
#[derive(Clone)]
enum Sent {
    /// By each attempt: the head shared, the body kept for sending again (up
    /// to the retry buffer).
    Replayed(Arc<Head>, Replay),
    /// By one attempt only: the caller's head and body themselves, which the
    /// attempt takes. Nothing is kept, locked or copied per frame.
    Once(Arc<Mutex<Option<(Head, Body)>>>),
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Replayed(_, replay) => replay.fmt(f),
            Self::Once(request) => f
                .debug_struct("Once")
                .field("sent", &request.lock().is_none())
                .finish(),
        }
    }
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
    pub(crate) fn replayed(parts: http::request::Parts, body: Body, retry_buffer: usize) -> Self {
        Self {
            sent: Sent::Replayed(Arc::new(Self::head(parts)), Replay::new(body, retry_buffer)),
            timeout: None,
        }
    }

    /// The request of `parts` and `body`, for a call that sends it once.
    pub(crate) fn once(parts: http::request::Parts, body: Body) -> Self {
        Self {
            sent: Sent::Once(Arc::new(Mutex::new(Some((Self::head(parts), body))))),
            timeout: None,
        }
    }

    fn head(parts: http::request::Parts) -> Head {
        Head {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
        }
    }

    fn into_http(self, metadata: MetadataMap) -> Result<http::Request<Body>, Status> {
        let (head, body) = match self.sent {
            Sent::Replayed(head, replay) => (
                Arc::try_unwrap(head).unwrap_or_else(|shared| (*shared).clone()),
                Body::new(replay.reader()),
            ),
            Sent::Once(request) => request.lock().take().ok_or_else(|| {
                Status::internal("the request's body was already sent by its one attempt")
            })?,
        };
        let mut request = http::Request::new(body);
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
        if let Some(timeout) = self.timeout {
            headers.insert(GRPC_TIMEOUT_HEADER, timeout);
        }
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// A channel request's method: sends the request as it came (its body
/// replayed when the call may send it again), and answers at the response
/// headers (where the call commits).
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

    /// The attempt's `grpc-timeout` goes into the request's own head when it
    /// is sent: no header map is made for it.
    fn request(
        &self,
        mut message: Outbound,
        metadata: MetadataMap,
        timeout: HeaderValue,
    ) -> tonic::Request<Outbound> {
        message.timeout = Some(timeout);
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = metadata;
        request
    }

    async fn send(
        &self,
        connection: &Connection,
        request: tonic::Request<Outbound>,
    ) -> Result<tonic::Response<http::Response<Body>>, Status> {
        let (metadata, _, outbound) = request.into_parts();
        let replay = match &outbound.sent {
            Sent::Replayed(_, replay) => Some(replay.clone()),
            Sent::Once(_) => None,
        };
        let response = connection.send(outbound.into_http(metadata)?).await?;
        if let Some(replay) = replay {
            replay.commit();
        }
        Ok(tonic::Response::new(response))
    }

    fn resendable(&self, request: &Outbound) -> bool {
        match &request.sent {
            Sent::Replayed(_, replay) => replay.replayable(),
            Sent::Once(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> http::request::Parts {
        http::Request::new(()).into_parts().0
    }

    #[test]
    fn a_request_sent_once_gives_its_body_to_one_attempt_and_is_never_resent() {
        let outbound = Outbound::once(parts(), Body::empty());
        assert!(!Raw::new(PathAndQuery::from_static("/s/m")).resendable(&outbound));
        let copy = outbound.clone();
        assert!(outbound.into_http(MetadataMap::new()).is_ok());
        let second = copy
            .into_http(MetadataMap::new())
            .expect_err("the body is gone");
        assert_eq!(second.code(), tonic::Code::Internal);
    }

    #[test]
    fn an_attempt_sends_its_own_grpc_timeout_over_the_requests() {
        let mut parts = parts();
        parts
            .headers
            .insert(GRPC_TIMEOUT_HEADER, HeaderValue::from_static("5S"));
        let raw = Raw::new(PathAndQuery::from_static("/s/m"));
        for outbound in [
            Outbound::once(parts.clone(), Body::empty()),
            Outbound::replayed(parts, Body::empty(), 1024),
        ] {
            let (metadata, _, outbound) = raw
                .request(
                    outbound,
                    MetadataMap::new(),
                    HeaderValue::from_static("250m"),
                )
                .into_parts();
            let request = outbound.into_http(metadata).expect("sent");
            let timeouts: Vec<_> = request
                .headers()
                .get_all(GRPC_TIMEOUT_HEADER)
                .iter()
                .collect();
            assert_eq!(timeouts, ["250m"]);
        }
    }

    #[test]
    fn a_replayed_request_is_sent_by_every_attempt_while_it_fits() {
        let outbound = Outbound::replayed(parts(), Body::empty(), 1024);
        assert!(Raw::new(PathAndQuery::from_static("/s/m")).resendable(&outbound));
        let copy = outbound.clone();
        assert!(outbound.into_http(MetadataMap::new()).is_ok());
        assert!(copy.into_http(MetadataMap::new()).is_ok());
    }
}
