//! [`CallObserver`]: the span, events and metrics of one call and its attempts.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tracing::field::{display, Empty};
use tracing::instrument::Instrumented;
use tracing::{debug, Instrument, Span};

use super::context;
use super::metrics::{code_label, AttemptKind, MethodMetrics};
use crate::policy::Strategy;
use registry_actor::Node;

/// How a call runs, for its span's `strategy` field and the kinds of its
/// attempts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// One node at a time, or several by `forking` or `hedging`.
    Unicast(Strategy),
    /// Every matching node at once.
    Broadcast,
}

impl Shape {
    /// The kinds of the first attempt and of every later one.
    fn kinds(self) -> (AttemptKind, AttemptKind) {
        match self {
            Self::Unicast(Strategy::Failfast | Strategy::Failover | Strategy::Failretry) => {
                (AttemptKind::First, AttemptKind::Retry)
            }
            Self::Unicast(Strategy::Forking(_)) => (AttemptKind::First, AttemptKind::Fork),
            Self::Unicast(Strategy::Hedging) => (AttemptKind::First, AttemptKind::Hedge),
            Self::Broadcast => (AttemptKind::Broadcast, AttemptKind::Broadcast),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unicast(strategy) => fmt::Display::fmt(strategy, f),
            Self::Broadcast => f.write_str("broadcast"),
        }
    }
}

/// The observer of one call: its `call` span, one `attempt` span and one
/// attempt count per attempt, and (through [`CallEnd`]) the call's own count
/// and latency. Every call path (strategies, channels) uses it the same way:
///
/// 1. [`CallObserver::new`] when the call is planned;
/// 2. [`CallObserver::end`] wraps the call's future, which records the final
///    code and latency;
/// 3. [`CallObserver::attempt`] as each attempt starts; its
///    [`AttemptObserver`] counts the attempt when finished, or as `CANCELLED`
///    when dropped unfinished.
///
/// With no subscriber interested in the spans they are disabled, and a call
/// costs a few atomic operations on handles resolved once per method.
pub(crate) struct CallObserver {
    metrics: Arc<MethodMetrics>,
    span: Span,
    first: AttemptKind,
    then: AttemptKind,
    started: AtomicU32,
}

impl fmt::Debug for CallObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallObserver")
            .field("service", self.metrics.service())
            .field("method", self.metrics.path())
            .field("attempts", &self.started.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl CallObserver {
    /// The observer of a call of `metrics`' method, run as `shape`; its span
    /// is a child of the current span.
    pub(crate) fn new(metrics: Arc<MethodMetrics>, shape: Shape) -> Self {
        // The fields are evaluated only when the span is enabled. Text goes
        // in as `Display`: a formatting subscriber writes it as it is,
        // where a `&str` would be escaped character by character.
        let span = tracing::info_span!(
            "call",
            rpc.system = %"grpc",
            rpc.service = %metrics.rpc_names().0,
            rpc.method = %metrics.rpc_names().1,
            service = %&**metrics.service(),
            strategy = %shape,
            attempts = Empty,
            code = Empty,
        );
        let (first, then) = shape.kinds();
        Self {
            metrics,
            span,
            first,
            then,
            started: AtomicU32::new(0),
        }
    }

    /// What records the end of the call: wrap the call's future with
    /// [`CallEnd::run`].
    pub(crate) fn end(&self) -> CallEnd {
        CallEnd {
            metrics: self.metrics.clone(),
            span: self.span.clone(),
            started: Instant::now(),
        }
    }

    /// Starts the observation of an attempt on `node`.
    pub(crate) fn attempt(&self, node: &Node) -> AttemptObserver<'_> {
        let n = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        let kind = if n == 1 { self.first } else { self.then };
        self.span.record("attempts", n);
        let span = tracing::info_span!(
            parent: &self.span,
            "attempt",
            node = %node.id(),
            server.address = %node.addr(),
            attempt = n,
            kind = %kind.name(),
            code = Empty,
        );
        AttemptObserver {
            call: self,
            kind,
            span,
            done: false,
        }
    }

    /// Says that the call tries again after `status` from `node`, in `wait`.
    pub(crate) fn retrying(&self, node: &Node, status: &Status, wait: Duration) {
        debug!(
            parent: &self.span,
            service = &**self.metrics.service(),
            node = node.id(),
            code = code_label(status.code()),
            ?wait,
            "retrying"
        );
    }

    /// Says that the retry budget refused the call an extra attempt.
    pub(crate) fn budget_refused(&self) {
        debug!(
            parent: &self.span,
            service = &**self.metrics.service(),
            "retry budget exhausted; no extra attempt"
        );
    }

    /// Says that the call makes no further attempt after `status` from
    /// `node` (a code it does not retry, or no attempt left).
    pub(crate) fn giving_up(&self, node: &Node, status: &Status) {
        debug!(
            parent: &self.span,
            service = &**self.metrics.service(),
            node = node.id(),
            code = code_label(status.code()),
            "no further attempt"
        );
    }
}

/// The observation of one attempt; see [`CallObserver`].
pub(crate) struct AttemptObserver<'a> {
    call: &'a CallObserver,
    kind: AttemptKind,
    span: Span,
    done: bool,
}

impl fmt::Debug for AttemptObserver<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptObserver")
            .field("kind", &self.kind)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl AttemptObserver<'_> {
    /// The attempt's span: its RPC runs in it.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Adds the trace context of the attempt's span to `metadata`, unless it
    /// carries a `traceparent` already (a call continuing another trace).
    pub(crate) fn inject(&self, metadata: &mut MetadataMap) {
        context::inject(&self.span, metadata);
    }

    /// Records the attempt's final code.
    pub(crate) fn finish(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        self.done = true;
        self.call.metrics.attempt(self.kind, code);
        self.span.record("code", display(code_label(code)));
    }
}

impl Drop for AttemptObserver<'_> {
    /// An attempt dropped unfinished was cancelled (its call ended first).
    fn drop(&mut self) {
        if !self.done {
            self.record(Code::Cancelled);
        }
    }
}

/// Records the end of a call: see [`CallObserver::end`].
#[derive(Debug)]
pub(crate) struct CallEnd {
    metrics: Arc<MethodMetrics>,
    span: Span,
    started: Instant,
}

impl CallEnd {
    /// Runs `call` in the call's span, then counts the call with its final
    /// code and latency and records the code on the span.
    pub(crate) fn run<F>(self, call: F) -> Ended<F> {
        Ended {
            call: call.instrument(self.span),
            end: Some((self.metrics, self.started)),
        }
    }
}

pin_project! {
    /// The future of [`CallEnd::run`]: the call in its span, counted when it
    /// ends. Written out rather than an `async` block, which would keep the
    /// call's future twice (as it was passed in, and instrumented).
    pub(crate) struct Ended<F> {
        #[pin]
        call: Instrumented<F>,
        end: Option<(Arc<MethodMetrics>, Instant)>,
    }
}

impl<F, T, E> Future for Ended<F>
where
    F: Future<Output = Result<T, E>>,
    T: Outcome,
    E: Outcome,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut call = this.call;
        let result = ready!(call.as_mut().poll(cx));
        if let Some((metrics, started)) = this.end.take() {
            let code = match &result {
                Ok(answer) => answer.code(),
                Err(e) => e.code(),
            };
            metrics.call(code, started.elapsed().as_secs_f64());
            call.as_ref()
                .get_ref()
                .span()
                .record("code", display(code_label(code)));
        }
        Poll::Ready(result)
    }
}

/// The final code of what a call answers.
pub(crate) trait Outcome {
    /// The gRPC code the call ends with.
    fn code(&self) -> Code;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_kinds_follow_the_strategy() {
        assert_eq!(
            Shape::Unicast(Strategy::Failover).kinds(),
            (AttemptKind::First, AttemptKind::Retry)
        );
        assert_eq!(
            Shape::Unicast(Strategy::Hedging).kinds(),
            (AttemptKind::First, AttemptKind::Hedge)
        );
        assert_eq!(
            Shape::Unicast(Strategy::Forking(3)).kinds(),
            (AttemptKind::First, AttemptKind::Fork)
        );
        assert_eq!(
            Shape::Broadcast.kinds(),
            (AttemptKind::Broadcast, AttemptKind::Broadcast)
        );
    }
}
