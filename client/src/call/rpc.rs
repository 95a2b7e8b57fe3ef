//! [`Rpc`]: how a strategy sends one attempt of a call to a node.
//!
//! The strategies run the same for every kind of call: a typed unary
//! [`Method`] sends prost messages; a channel request sends an HTTP/2 request
//! whose body is replayed for each attempt. An `Rpc` hands one attempt to a
//! node's connection and answers as soon as the node's status is known.

use std::future::Future;

use http::HeaderValue;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::status::GRPC_TIMEOUT_HEADER;
use crate::connection::Connection;
use crate::Method;

/// One kind of call as its strategy sends it: `Req` goes out on each attempt
/// (copied for all but the last), `Resp` comes back.
pub(crate) trait Rpc<Req, Resp>: Send + Sync + 'static {
    /// The method's path, `/package.Service/Method`; its settings are looked
    /// up by it.
    fn path(&self) -> &str;

    /// The request of one attempt: `message` with the call's `metadata`,
    /// and `timeout` (the attempt's remaining time) sent as its
    /// `grpc-timeout`, over any in the metadata.
    fn request(
        &self,
        message: Req,
        metadata: MetadataMap,
        timeout: HeaderValue,
    ) -> tonic::Request<Req> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = metadata;
        request
            .metadata_mut()
            .as_mut()
            .insert(GRPC_TIMEOUT_HEADER, timeout);
        request
    }

    /// Sends one attempt of `request` on `connection`.
    fn send(
        &self,
        connection: &Connection,
        request: tonic::Request<Req>,
    ) -> impl Future<Output = Result<tonic::Response<Resp>, Status>> + Send;

    /// Whether `request` may still be sent again after an attempt sent it
    /// (default: always).
    fn resendable(&self, _request: &Req) -> bool {
        true
    }
}

impl<Req, Resp> Rpc<Req, Resp> for Method<Req, Resp>
where
    Req: prost::Message + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    fn path(&self) -> &str {
        Method::path(self)
    }

    fn send(
        &self,
        connection: &Connection,
        request: tonic::Request<Req>,
    ) -> impl Future<Output = Result<tonic::Response<Resp>, Status>> + Send {
        connection.call(self, request)
    }
}
