//! The client's metric handles, resolved once per service and method.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge, Histogram};
use tonic::Code;

use registry_actor::metrics::{
    CLIENT_ATTEMPTS as ATTEMPTS, CLIENT_BUDGET_EXHAUSTED as BUDGET_EXHAUSTED,
    CLIENT_CALLS as CALLS, CLIENT_CALL_DURATION as CALL_DURATION, CLIENT_EJECTIONS as EJECTIONS,
    CLIENT_NODES as NODES, CLIENT_THROTTLED as THROTTLED,
};

/// What an attempt is to its call: the `kind` label of the attempt counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptKind {
    /// The first attempt of a unicast call.
    First,
    /// Another attempt of `failover` or `failretry`.
    Retry,
    /// Another attempt of `hedging`.
    Hedge,
    /// Another node of `forking`.
    Fork,
    /// One node of a broadcast.
    Broadcast,
}

impl AttemptKind {
    const ALL: usize = 5;

    /// The label value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Retry => "retry",
            Self::Hedge => "hedge",
            Self::Fork => "fork",
            Self::Broadcast => "broadcast",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

pub(crate) use registry_actor::metrics::code_name as code_label;

/// gRPC codes are 0..=16.
const CODES: usize = 17;

/// A handle registered with the installed recorder on first use: a label
/// set nothing ever used is never exported.
type Lazy<T> = OnceLock<T>;

/// The metrics of one service: its methods' handles, and its own counters.
///
/// Handles are registered with the recorder installed when they are first
/// used; a recorder installed later does not see them (install it before the
/// first call).
pub(crate) struct ServiceMetrics {
    service: Arc<str>,
    budget_exhausted: Lazy<Counter>,
    throttled: Lazy<Counter>,
    /// Replaced whole when a method is first called.
    methods: ArcSwap<foldhash::HashMap<Arc<str>, Arc<MethodMetrics>>>,
}

impl std::fmt::Debug for ServiceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceMetrics")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl ServiceMetrics {
    pub(crate) fn new(service: Arc<str>) -> Self {
        Self {
            service,
            budget_exhausted: Lazy::new(),
            throttled: Lazy::new(),
            methods: ArcSwap::default(),
        }
    }

    /// The handles of `method` (a gRPC path), made on its first call.
    pub(crate) fn method(&self, method: &str) -> Arc<MethodMetrics> {
        if let Some(m) = self.methods.load().get(method) {
            return m.clone();
        }
        let made = Arc::new(MethodMetrics::new(self.service.clone(), method.into()));
        let mut found = None;
        self.methods.rcu(|methods| {
            if let Some(m) = methods.get(method) {
                found = Some(m.clone());
                return methods.clone();
            }
            let mut methods = (**methods).clone();
            methods.insert(made.method.clone(), made.clone());
            Arc::new(methods)
        });
        found.unwrap_or(made)
    }

    /// Counts an extra attempt the retry budget refused.
    pub(crate) fn budget_exhausted(&self) {
        self.budget_exhausted
            .get_or_init(
                || metrics::counter!(BUDGET_EXHAUSTED, "service" => self.service.to_string()),
            )
            .increment(1);
    }

    /// Counts an attempt the adaptive throttle refused.
    pub(crate) fn throttled(&self) {
        self.throttled
            .get_or_init(|| metrics::counter!(THROTTLED, "service" => self.service.to_string()))
            .increment(1);
    }
}

/// The handles of one method of one service.
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    service: Arc<str>,
    method: Arc<str>,
    /// Where the path's gRPC service and method names lie in it.
    rpc: (Range<usize>, Range<usize>),
    calls: [Lazy<Counter>; CODES],
    attempts: [[Lazy<Counter>; CODES]; AttemptKind::ALL],
    duration: Lazy<Histogram>,
}

impl MethodMetrics {
    fn new(service: Arc<str>, method: Arc<str>) -> Self {
        Self {
            service,
            rpc: rpc_names(&method),
            method,
            calls: Default::default(),
            attempts: Default::default(),
            duration: Lazy::new(),
        }
    }

    /// The service.
    pub(crate) fn service(&self) -> &Arc<str> {
        &self.service
    }

    /// The gRPC path.
    pub(crate) fn path(&self) -> &Arc<str> {
        &self.method
    }

    /// The path's gRPC service and method names: `/package.Service/Method`
    /// as (`package.Service`, `Method`); a path without a service has an
    /// empty service name.
    pub(crate) fn rpc_names(&self) -> (&str, &str) {
        (
            &self.method[self.rpc.0.clone()],
            &self.method[self.rpc.1.clone()],
        )
    }

    /// Counts a finished call and its latency.
    pub(crate) fn call(&self, code: Code, seconds: f64) {
        self.calls[code as usize]
            .get_or_init(|| {
                metrics::counter!(CALLS,
                    "service" => self.service.to_string(),
                    "method" => self.method.to_string(),
                    "code" => code_label(code))
            })
            .increment(1);
        self.duration
            .get_or_init(|| {
                metrics::histogram!(CALL_DURATION,
                    "service" => self.service.to_string(),
                    "method" => self.method.to_string())
            })
            .record(seconds);
    }

    /// Counts a finished (or cancelled) attempt.
    pub(crate) fn attempt(&self, kind: AttemptKind, code: Code) {
        self.attempts[kind.index()][code as usize]
            .get_or_init(|| {
                metrics::counter!(ATTEMPTS,
                    "service" => self.service.to_string(),
                    "method" => self.method.to_string(),
                    "code" => code_label(code),
                    "kind" => kind.name())
            })
            .increment(1);
    }
}

/// The node gauges and ejection counter of one picker, set on every change.
pub(crate) struct PickerMetrics {
    pickable: Gauge,
    ejected: Gauge,
    held: Gauge,
    ejections: Counter,
}

impl std::fmt::Debug for PickerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickerMetrics").finish_non_exhaustive()
    }
}

impl PickerMetrics {
    pub(crate) fn new(service: &str) -> Self {
        let gauge = |state: &'static str| metrics::gauge!(NODES, "service" => service.to_owned(), "state" => state);
        Self {
            pickable: gauge("pickable"),
            ejected: gauge("ejected"),
            held: gauge("held"),
            ejections: metrics::counter!(EJECTIONS, "service" => service.to_owned()),
        }
    }

    /// Sets the node counts: nodes a pick may choose, nodes ejected, nodes
    /// held by the panic threshold.
    pub(crate) fn nodes(&self, pickable: usize, ejected: usize, held: usize) {
        self.pickable.set(pickable as f64);
        self.ejected.set(ejected as f64);
        self.held.set(held as f64);
    }

    /// Counts an ejection.
    pub(crate) fn ejected(&self) {
        self.ejections.increment(1);
    }
}

/// Where the gRPC service and method names lie in `path` (see
/// [`MethodMetrics::rpc_names`]).
fn rpc_names(path: &str) -> (Range<usize>, Range<usize>) {
    let start = usize::from(path.starts_with('/'));
    match path[start..].rfind('/') {
        Some(at) => (start..start + at, start + at + 1..path.len()),
        None => (start..start, start..path.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_splits_into_its_service_and_method_names() {
        for (path, names) in [
            ("/echo.v1.Echo/Say", ("echo.v1.Echo", "Say")),
            ("echo.v1.Echo/Say", ("echo.v1.Echo", "Say")),
            ("/Say", ("", "Say")),
            ("Say", ("", "Say")),
            ("", ("", "")),
        ] {
            let metrics = MethodMetrics::new("echo".into(), path.into());
            assert_eq!(metrics.rpc_names(), names, "{path:?}");
        }
    }
}
