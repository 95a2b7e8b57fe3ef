//! [`Method`]: a typed gRPC method descriptor.

use std::fmt;
use std::marker::PhantomData;

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
