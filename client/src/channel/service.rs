//! [`ClusterChannel`]: the tower service generated clients run on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::Status;

use super::outbound::{Outbound, Raw};
use crate::call::{
    parse_grpc_timeout, run_planned, GRPC_TIMEOUT_HEADER, REQUEST_ID, REQUEST_ID_HEADER,
};
use crate::{Attempt, CallFuture, CallOptions, ClientHandle, ClusterClient, NodeRef, Reply};

/// A channel to every node of one service, for tonic-generated clients:
/// `EchoClient::new(handle.channel("echo"))`.
///
/// Each request is picked, balanced, retried and budgeted as a
/// [`Call`](crate::Call) of the same method would be (the policy of the
/// method's path from `[client.services.NAME.methods]`, else the service's).
/// Its deadline is the request's own (`tonic::Request::set_timeout`), else the
/// configured timeout; [`CallOptions`] in the request's extensions override
/// the channel's ([`with_options`](Self::with_options)), which override the
/// configuration.
///
/// Retries follow gRFC A6: the request body is kept (up to
/// `client.retry_buffer`) so that another attempt can send it again; the call
/// commits to an attempt once that attempt's response headers arrive, and
/// nothing is retried after that, nor once the body outgrew the buffer. The
/// same holds for unary and streaming calls of every kind; a stream that
/// breaks after the headers gives its error to the caller.
///
/// A successful response carries a [`CallRecord`] in its extensions (the node
/// and every attempt); a failed call's `Status` has the [`CallError`](crate::CallError) as its
/// source.
///
/// `Clone + Send + Sync + 'static`: clones share the client.
#[derive(Clone)]
pub struct ClusterChannel {
    handle: ClientHandle,
    service: Arc<str>,
    options: Option<Arc<CallOptions>>,
}

impl std::fmt::Debug for ClusterChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterChannel")
            .field("service", &self.service)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Where a channel call was answered: the node, every attempt (the one that
/// answered last) and the time until the response headers. In the
/// extensions of each response of a [`ClusterChannel`].
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The node that answered.
    pub node: NodeRef,
    /// Every attempt, the one that answered last.
    pub attempts: Vec<Attempt>,
    /// From the request to the response headers.
    pub latency: Duration,
}

impl ClientHandle {
    /// A channel to the nodes of `service`, for tonic-generated clients.
    pub fn channel(&self, service: impl Into<Arc<str>>) -> ClusterChannel {
        ClusterChannel {
            handle: self.clone(),
            service: service.into(),
            options: None,
        }
    }
}

impl ClusterClient {
    /// A channel to the nodes of `service`, for tonic-generated clients (the
    /// same as [`ClientHandle::channel`]; from an `Addr`, send
    /// [`GetHandle`](crate::GetHandle) first).
    pub fn channel(&self, service: impl Into<Arc<str>>) -> ClusterChannel {
        self.handle().channel(service)
    }
}

impl ClusterChannel {
    /// The service it calls.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Uses `options` for every request that does not carry its own (default:
    /// the configured settings). Options in a request's extensions win, field
    /// by field; metadata of both is sent.
    pub fn with_options(mut self, options: CallOptions) -> Self {
        self.options = Some(Arc::new(options));
        self
    }

    /// The options of `request`: its own over the channel's, its
    /// `grpc-timeout` bounding the deadline, its `x-request-id` kept.
    fn options(&self, parts: &mut http::request::Parts) -> CallOptions {
        let own = parts.extensions.remove::<CallOptions>();
        let mut options = match (own, &self.options) {
            (Some(own), Some(channel)) => own.over(channel),
            (Some(own), None) => own,
            (None, Some(channel)) => (**channel).clone(),
            (None, None) => CallOptions::default(),
        };
        // Read, not removed: each attempt sets its own `grpc-timeout` over it.
        let timeout = parts
            .headers
            .get(GRPC_TIMEOUT_HEADER)
            .and_then(|v| v.to_str().ok().and_then(parse_grpc_timeout));
        if let Some(timeout) = timeout {
            options.timeout = Some(options.timeout.map_or(timeout, |t| t.min(timeout)));
        }
        if let Some(id) = parts.headers.remove(REQUEST_ID_HEADER) {
            if !options.metadata.contains_key(REQUEST_ID) {
                options.metadata.as_mut().insert(REQUEST_ID_HEADER, id);
            }
        }
        options
    }

    /// Runs one request by its method's strategy.
    fn run(&self, request: http::Request<Body>) -> ResponseFuture {
        let (mut parts, body) = request.into_parts();
        let options = self.options(&mut parts);
        // Not sent: the map is kept, emptied, for the response's record.
        let mut extensions = std::mem::take(&mut parts.extensions);
        extensions.clear();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let outbound = |resent: bool| match resent {
            true => Outbound::replayed(parts, body, self.handle.retry_buffer()),
            false => Outbound::once(parts, body),
        };
        let planned = self
            .handle
            .plan(&self.service, Raw::new(path), outbound, options, false);
        let inner = self.handle.holding_thread(run_planned(planned));
        ResponseFuture { inner, extensions }
    }
}

impl CallOptions {
    /// These options over `under`: each setting of these, else of `under`;
    /// the metadata of both.
    fn over(self, under: &Self) -> Self {
        let mut metadata = under.metadata.clone();
        for (key, value) in self.metadata.into_headers().into_iter() {
            if let Some(key) = key {
                metadata.as_mut().append(key, value);
            }
        }
        Self {
            strategy: self.strategy.or(under.strategy),
            retries: self.retries.or(under.retries),
            timeout: self.timeout.or(under.timeout),
            attempt_timeout: self.attempt_timeout.or(under.attempt_timeout),
            selector: self.selector.or_else(|| under.selector.clone()),
            hash_key: self.hash_key.or(under.hash_key),
            metadata,
            deadline: self.deadline.or(under.deadline),
            inherited: self.inherited.or_else(|| under.inherited.clone()),
        }
    }
}

impl tower::Service<http::Request<Body>> for ClusterChannel {
    type Response = http::Response<Body>;
    type Error = Status;
    type Future = ResponseFuture;

    /// Always ready: each request waits for its own node.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> ResponseFuture {
        self.run(request)
    }
}

/// The future of one [`ClusterChannel`] request: the response at its headers,
/// or the call's final status.
pub struct ResponseFuture {
    inner: CallFuture<Reply<http::Response<Body>>>,
    /// The request's extensions map, emptied: the response's, so that its
    /// record takes no map of its own.
    extensions: http::Extensions,
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<Body>, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx).map(|answer| match answer {
            Ok(reply) => {
                let mut response = reply.message;
                let mut extensions = std::mem::take(&mut self.extensions);
                extensions.extend(std::mem::take(response.extensions_mut()));
                extensions.insert(CallRecord {
                    node: reply.node,
                    attempts: reply.attempts,
                    latency: reply.latency,
                });
                *response.extensions_mut() = extensions;
                Ok(response)
            }
            Err(error) => {
                let mut status = Status::from(error.clone());
                status.set_source(Arc::new(error));
                Err(status)
            }
        })
    }
}

/// Compile-time check: a channel crosses threads and lives as long as needed.
#[allow(dead_code)]
fn channel_is_send_sync_static(channel: ClusterChannel) {
    fn check<T: Clone + Send + Sync + 'static>(_: T) {}
    check(channel);
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataMap;

    use super::*;
    use crate::Strategy;

    fn metadata(key: &'static str, value: &'static str) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert(key, value.parse().expect("value"));
        md
    }

    #[test]
    fn request_options_win_field_by_field_and_both_metadata_are_sent() {
        let channel = CallOptions::new()
            .with_strategy(Strategy::Failover)
            .with_retries(5)
            .with_timeout(Duration::from_secs(3))
            .with_metadata(metadata("x-channel", "1"));
        let own = CallOptions::new()
            .with_retries(1)
            .with_metadata(metadata("x-own", "2"));
        let merged = own.over(&channel);
        assert_eq!(merged.strategy, Some(Strategy::Failover));
        assert_eq!(merged.retries, Some(1));
        assert_eq!(merged.timeout, Some(Duration::from_secs(3)));
        assert_eq!(merged.attempt_timeout, None);
        for (key, value) in [("x-channel", "1"), ("x-own", "2")] {
            let got = merged.metadata.get(key).and_then(|v| v.to_str().ok());
            assert_eq!(got, Some(value), "{key}");
        }
    }
}
