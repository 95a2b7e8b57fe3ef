//! [`CallOptions::inherit`]: a call made while serving another carries that
//! call's deadline and identity, so a chain of services keeps one deadline,
//! one request id and one trace.

use std::sync::Arc;

use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataKey, MetadataMap};

use super::messages::{CallOptions, Inbound};
use super::status::{parse_grpc_timeout, GRPC_TIMEOUT, REQUEST_ID};

/// The W3C trace context keys an inherited call carries.
const TRACE_KEYS: [&str; 2] = ["traceparent", "tracestate"];

impl CallOptions {
    /// The options of a call made while serving `inbound`:
    ///
    /// * its deadline is the inbound call's: the `grpc-timeout` it arrived
    ///   with, counted from now (the time the request spent before the handler
    ///   ran is not known here), so no attempt outlives the caller's wait; a
    ///   shorter timeout of the call's own still applies;
    /// * it sends the inbound `x-request-id` (instead of a new one),
    ///   `traceparent` and `tracestate`;
    /// * it sends the inbound values of the metadata keys listed in
    ///   `client.propagate`.
    ///
    /// Use it on a [`Call`](super::Call), or put it in a channel request's
    /// extensions:
    ///
    /// ```
    /// use cluster_client::CallOptions;
    /// # fn handler(inbound: tonic::Request<()>) {
    /// let mut outbound = tonic::Request::new(());
    /// outbound.extensions_mut().insert(CallOptions::inherit(&inbound));
    /// # }
    /// ```
    pub fn inherit<T>(inbound: &tonic::Request<T>) -> Self {
        let metadata = inbound.metadata();
        let mut options = Self::new();
        let remaining = metadata
            .get(GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        if let Some(remaining) = remaining {
            options.deadline = Some(Instant::now() + remaining);
        }
        for key in [REQUEST_ID].into_iter().chain(TRACE_KEYS) {
            for value in metadata.get_all(key) {
                options.metadata.append(key, value.clone());
            }
        }
        options.inherited = Some(Inbound(Arc::new(metadata.clone())));
        options
    }
}

/// Adds the values `inbound` has for `keys` to `outbound`, unless the outbound
/// call sets a key itself.
pub(crate) fn propagate(
    outbound: &mut MetadataMap,
    inbound: &MetadataMap,
    keys: &[MetadataKey<Ascii>],
) {
    for key in keys {
        if outbound.contains_key(key) {
            continue;
        }
        for value in inbound.get_all(key) {
            outbound.append(key.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn inherit_takes_the_deadline_and_identity_of_the_inbound_call() {
        let mut inbound = tonic::Request::new(());
        let md = inbound.metadata_mut();
        md.insert("grpc-timeout", "1500m".parse().expect("value"));
        md.insert("x-request-id", "abc".parse().expect("value"));
        md.insert("traceparent", "00-1-2-01".parse().expect("value"));
        md.insert("tracestate", "a=b".parse().expect("value"));
        md.insert("x-tenant", "t1".parse().expect("value"));
        md.insert("x-other", "o".parse().expect("value"));
        md.insert("authorization", "Bearer s3cret".parse().expect("value"));
        let before = Instant::now();
        let options = CallOptions::inherit(&inbound);
        let deadline = options.deadline.expect("a deadline");
        assert!(deadline >= before + Duration::from_millis(1500));
        assert!(deadline <= Instant::now() + Duration::from_millis(1500));
        for (key, value) in [
            ("x-request-id", "abc"),
            ("traceparent", "00-1-2-01"),
            ("tracestate", "a=b"),
        ] {
            assert_eq!(
                options.metadata.get(key).and_then(|v| v.to_str().ok()),
                Some(value)
            );
        }
        assert!(!options.metadata.contains_key("x-tenant"));

        let mut outbound = MetadataMap::new();
        outbound.insert("x-other", "mine".parse().expect("value"));
        let keys: Vec<MetadataKey<Ascii>> = ["x-tenant", "x-other", "x-absent"]
            .iter()
            .map(|k| k.parse().expect("key"))
            .collect();
        let inbound = options.inherited.as_ref().expect("the inbound metadata");
        propagate(&mut outbound, &inbound.0, &keys);
        let shown = format!("{options:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(
            !shown.contains("s3cret"),
            "no inbound value in Debug: {shown}"
        );
        assert_eq!(
            outbound.get("x-tenant").and_then(|v| v.to_str().ok()),
            Some("t1")
        );
        assert_eq!(
            outbound.get("x-other").and_then(|v| v.to_str().ok()),
            Some("mine")
        );
        assert!(!outbound.contains_key("x-absent"));
    }

    #[test]
    fn an_inbound_call_without_a_deadline_gives_none() {
        let mut inbound = tonic::Request::new(());
        inbound
            .metadata_mut()
            .insert("grpc-timeout", "soon".parse().expect("value"));
        assert!(CallOptions::inherit(&inbound).deadline.is_none());
    }
}
