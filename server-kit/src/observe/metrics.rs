//! The server's metric handles, resolved once per method.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use metrics::{Counter, Histogram};
use registry_actor::metrics::{
    code_name, SERVER_RATE_LIMITED, SERVER_REQUESTS, SERVER_REQUEST_DURATION, SERVER_SHED,
};
use tonic::Code;

use crate::Limit;

/// At most this many methods get labels of their own; calls of any other
/// path are counted under [`OTHER`], so a client sending made-up paths cannot
/// grow the exported series without bound.
pub(crate) const MAX_METHODS: usize = 512;

/// The `method` label of paths past [`MAX_METHODS`].
pub(crate) const OTHER: &str = "other";

/// gRPC codes are 0..=16.
const CODES: usize = 17;

/// The handles of every method seen, by path.
pub(crate) struct MethodTable {
    /// Replaced whole when a method is first seen.
    methods: ArcSwap<foldhash::HashMap<Box<str>, Arc<MethodMetrics>>>,
    other: Arc<MethodMetrics>,
}

impl std::fmt::Debug for MethodTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodTable")
            .field("methods", &self.methods.load().len())
            .finish()
    }
}

impl Default for MethodTable {
    fn default() -> Self {
        Self {
            methods: ArcSwap::default(),
            other: Arc::new(MethodMetrics::new(OTHER.into())),
        }
    }
}

impl MethodTable {
    /// The handles of the method at `path`, made on its first call.
    pub(crate) fn method(&self, path: &str) -> Arc<MethodMetrics> {
        if let Some(m) = self.methods.load().get(path) {
            return m.clone();
        }
        let mut found = None;
        self.methods.rcu(|methods| {
            if let Some(m) = methods.get(path) {
                found = Some(m.clone());
                return methods.clone();
            }
            if methods.len() >= MAX_METHODS {
                found = Some(self.other.clone());
                return methods.clone();
            }
            let made = Arc::new(MethodMetrics::new(path.into()));
            found = Some(made.clone());
            let mut methods = (**methods).clone();
            methods.insert(path.into(), made);
            Arc::new(methods)
        });
        found.unwrap_or_else(|| self.other.clone())
    }
}

/// The handles of one method; each label set is registered on first use.
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    method: Arc<str>,
    requests: [OnceLock<Counter>; CODES],
    duration: OnceLock<Histogram>,
    rate_limited: [OnceLock<Counter>; 4],
    shed: OnceLock<Counter>,
}

impl MethodMetrics {
    fn new(method: Arc<str>) -> Self {
        Self {
            method,
            requests: Default::default(),
            duration: OnceLock::new(),
            rate_limited: Default::default(),
            shed: OnceLock::new(),
        }
    }

    /// The method's label: its path, or [`OTHER`].
    #[cfg(test)]
    pub(crate) fn method(&self) -> &str {
        &self.method
    }

    /// Counts an answered request and its latency.
    pub(crate) fn request(&self, code: Code, seconds: f64) {
        self.requests[code as usize]
            .get_or_init(|| {
                metrics::counter!(SERVER_REQUESTS,
                    "method" => self.method.to_string(),
                    "code" => code_name(code))
            })
            .increment(1);
        self.duration
            .get_or_init(|| {
                metrics::histogram!(SERVER_REQUEST_DURATION, "method" => self.method.to_string())
            })
            .record(seconds);
    }

    /// Counts a request refused by the `limit` rate limit.
    pub(crate) fn rate_limited(&self, limit: Limit) {
        let (index, scope) = match limit {
            Limit::Global => (0, "global"),
            Limit::Method => (1, "method"),
            Limit::Caller => (2, "caller"),
            Limit::Cluster => (3, "cluster"),
        };
        self.rate_limited[index]
            .get_or_init(|| {
                metrics::counter!(SERVER_RATE_LIMITED,
                    "method" => self.method.to_string(),
                    "scope" => scope)
            })
            .increment(1);
    }

    /// Counts a request shed by the adaptive in-flight limit.
    pub(crate) fn shed(&self) {
        self.shed
            .get_or_init(|| metrics::counter!(SERVER_SHED, "method" => self.method.to_string()))
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_past_the_bound_share_one_label() {
        let table = MethodTable::default();
        for i in 0..MAX_METHODS {
            assert_eq!(
                table.method(&format!("/p.S/M{i}")).method(),
                format!("/p.S/M{i}")
            );
        }
        assert_eq!(table.method("/p.S/Extra").method(), OTHER);
        assert_eq!(table.method("/p.S/M0").method(), "/p.S/M0");
    }
}
