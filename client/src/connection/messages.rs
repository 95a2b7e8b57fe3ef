//! Messages of the [`ConnectionActor`](super::ConnectionActor), and the typed
//! method descriptor they carry.

use std::fmt;
use std::marker::PhantomData;

use actix::prelude::*;
use http::uri::PathAndQuery;

/// A typed unary gRPC method: its path (`/echo.v1.Echo/Say`) and its prost
/// request and response types. Works for any gRPC server, generated client or not.
///
/// # Examples
///
/// ```
/// use cluster_client::Method;
/// # #[derive(Clone, PartialEq, prost::Message)] struct SayRequest {}
/// # #[derive(Clone, PartialEq, prost::Message)] struct SayReply {}
/// const SAY: Method<SayRequest, SayReply> = Method::from_static("/echo.v1.Echo/Say");
/// assert_eq!(SAY.name(), "Say");
/// assert_eq!(SAY.service_name(), "echo.v1.Echo");
/// ```
pub struct Method<Req, Resp> {
    path: MethodPath,
    _types: PhantomData<fn(Req) -> Resp>,
}

#[derive(Clone)]
enum MethodPath {
    Static(&'static str),
    Owned(std::sync::Arc<str>),
}

impl<Req, Resp> Method<Req, Resp> {
    /// A method from a constant path `/package.Service/Method`.
    ///
    /// # Panics
    ///
    /// At compile time (in a `const`) or at once, when `path` does not start with
    /// `/` or has no method part.
    pub const fn from_static(path: &'static str) -> Self {
        let bytes = path.as_bytes();
        assert!(
            bytes.len() > 3 && bytes[0] == b'/',
            "a gRPC path is /package.Service/Method"
        );
        Self {
            path: MethodPath::Static(path),
            _types: PhantomData,
        }
    }

    /// A method from a path known at run time.
    ///
    /// # Errors
    ///
    /// [`crate::Error::BadMethod`] when `path` is not `/package.Service/Method`.
    pub fn new(path: &str) -> Result<Self, crate::Error> {
        let ok = path.starts_with('/')
            && path[1..]
                .split_once('/')
                .is_some_and(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
            && PathAndQuery::try_from(path).is_ok();
        if !ok {
            return Err(crate::Error::BadMethod(path.to_owned()));
        }
        Ok(Self {
            path: MethodPath::Owned(path.into()),
            _types: PhantomData,
        })
    }

    /// The full path, `/package.Service/Method`.
    pub fn path(&self) -> &str {
        match &self.path {
            MethodPath::Static(s) => s,
            MethodPath::Owned(s) => s,
        }
    }

    /// The method name, the part after the last `/` (`Say`); per-method
    /// configuration tables use it.
    pub fn name(&self) -> &str {
        let path = self.path();
        match path.as_bytes().iter().rposition(|&b| b == b'/') {
            Some(i) => path.get(i + 1..).unwrap_or_default(),
            None => path,
        }
    }

    /// The fully qualified service name (`echo.v1.Echo`).
    pub fn service_name(&self) -> &str {
        let p = self.path().trim_start_matches('/');
        p.split_once('/').map_or(p, |(s, _)| s)
    }

    pub(crate) fn path_and_query(&self) -> PathAndQuery {
        match &self.path {
            MethodPath::Static(s) => PathAndQuery::from_static(s),
            // Validated in `new`.
            MethodPath::Owned(s) => {
                PathAndQuery::try_from(&**s).unwrap_or_else(|_| PathAndQuery::from_static("/"))
            }
        }
    }
}

impl<Req, Resp> Clone for Method<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            path: self.path.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> fmt::Debug for Method<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Method").field(&self.path()).finish()
    }
}

/// Runs one attempt of a unary call on the actor's node. Answers the tonic
/// response or status exactly as the server (or the transport) gave it.
///
/// The attempt runs as its own task; dropping the [`AttemptGuard`] that
/// [`Execute::new`] returned cancels it (the server sees the stream reset). A
/// call that no longer needs an attempt (a forking loser, a passed deadline)
/// drops the guard.
pub struct Execute<Req, Resp> {
    /// The method.
    pub method: Method<Req, Resp>,
    /// The request with its metadata, extensions and timeout (`grpc-timeout`).
    pub request: tonic::Request<Req>,
    pub(crate) cancel: tokio::sync::oneshot::Receiver<()>,
}

impl<Req, Resp> Execute<Req, Resp> {
    /// An attempt of `method` with `request`, and the guard that keeps it alive.
    pub fn new(method: Method<Req, Resp>, request: tonic::Request<Req>) -> (Self, AttemptGuard) {
        let (tx, cancel) = tokio::sync::oneshot::channel();
        (
            Self {
                method,
                request,
                cancel,
            },
            AttemptGuard(tx),
        )
    }
}

/// Keeps an [`Execute`] running; dropping it cancels the attempt.
#[derive(Debug)]
pub struct AttemptGuard(#[allow(dead_code)] tokio::sync::oneshot::Sender<()>);

impl<Req, Resp> fmt::Debug for Execute<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Execute")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl<Req: 'static, Resp: 'static> Message for Execute<Req, Resp> {
    type Result = Result<tonic::Response<Resp>, tonic::Status>;
}

/// Stops the actor once its calls in flight have ended (its node left).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Close;
