//! Section `observe`: the cost of observability on the call path.
//! `ClientHandle::call` failfast to 1 node with nothing observing (no metrics
//! recorder, no `tracing` subscriber) against the same with the Prometheus
//! recorder installed and an info-level subscriber: `tracing_subscriber`'s
//! registry alone, which keeps spans and has no output (the target's row),
//! and `fmt` writing to a sink, which also formats every span's fields.
//! p50 at concurrency 1, calls/s at 64.
//!
//! The recorder is global: the plain row's client resolves its metric
//! handles (to no-ops) before [`recorder`] installs it, the observed rows'
//! after. Sections run after this one (the server kit's) run with the
//! recorder on. Every row runs each call inside `WithDispatch` (the plain row
//! with `Dispatch::none()`), so the per-poll cost of switching dispatchers,
//! which an application with one global subscriber does not pay, is the same
//! on every side.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use cluster_client::{ClientConfig, Strategy};
use tracing::span::{Attributes, Id};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::cluster::{listed_client, Setup};
use crate::harness::{interleave, Caller, Measure, Row, Via, CONCURRENCY, THROUGHPUT_CALLS};
use crate::report::{ratio, ratio_text, table_head, value, Report, Target};

/// Installs the process's Prometheus recorder once; later calls do nothing.
pub(crate) fn recorder() -> &'static grpc_cluster::metrics::Metrics {
    static METRICS: OnceLock<grpc_cluster::metrics::Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        grpc_cluster::metrics::install(&grpc_cluster::metrics::MetricsConfig::default())
            .expect("the first recorder installs")
    })
}

/// Counts the `call` spans a subscriber makes: the proof that a row's calls
/// were observed. (With the `fmt` subscriber as the only scoped dispatcher
/// in the process, the callsites being first hit outside it by the plain
/// client, its calls made no span.)
#[derive(Clone, Default)]
pub(crate) struct CallSpans(Arc<AtomicU64>);

impl CallSpans {
    fn made(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl<S: Subscriber> Layer<S> for CallSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() == "call" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What observes the observed row: the process's Prometheus recorder,
/// installed by this call if it was not, and an info-level `fmt` subscriber
/// writing to a sink; `spans` counts its `call` spans.
pub(crate) fn observing(spans: CallSpans) -> Dispatch {
    recorder();
    Dispatch::new(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish()
            .with(spans),
    )
}

/// The recorder, installed if it was not, and an info-level subscriber that
/// keeps spans and formats nothing (`tracing_subscriber`'s registry); `spans`
/// counts its `call` spans.
pub(crate) fn observing_unformatted(spans: CallSpans) -> Dispatch {
    recorder();
    Dispatch::new(
        tracing_subscriber::registry()
            .with(spans)
            .with(tracing_subscriber::filter::LevelFilter::INFO),
    )
}

pub(crate) async fn run(report: &mut Report, setup: &Setup) {
    let registry = &setup.registry;
    let plain =
        Via::handle(&listed_client(registry, ClientConfig::default(), "echo", 1).await).await;
    // Its handles resolve on its first call: before the recorder exists.
    assert!(
        Caller::Cluster(plain.clone(), "echo", Strategy::Failfast)
            .call(0)
            .await
            .is_some(),
        "observe: first plain call"
    );
    let (formatted_spans, unformatted_spans) = (CallSpans::default(), CallSpans::default());
    let observing = observing(formatted_spans.clone());
    let metrics = recorder();
    let observed =
        Via::handle(&listed_client(registry, ClientConfig::default(), "echo", 1).await).await;
    let unformatted =
        Via::handle(&listed_client(registry, ClientConfig::default(), "echo", 1).await).await;
    let mut rows = [
        Row::new(
            "`ClientHandle::call` failfast, not observed",
            Caller::Observed(
                Box::new(Caller::Cluster(plain, "echo", Strategy::Failfast)),
                Dispatch::none(),
            ),
        ),
        Row::new(
            "`ClientHandle::call` failfast, metrics + spans (`fmt`)",
            Caller::Observed(
                Box::new(Caller::Cluster(observed, "echo", Strategy::Failfast)),
                observing,
            ),
        ),
        Row::new(
            "`ClientHandle::call` failfast, metrics + spans (registry, nothing formatted)",
            Caller::Observed(
                Box::new(Caller::Cluster(unformatted, "echo", Strategy::Failfast)),
                observing_unformatted(unformatted_spans.clone()),
            ),
        ),
    ];
    let rounds = setup.rounds;
    interleave(&mut rows, rounds, "observe", Measure::BOTH).await;
    // The observed client's calls were counted: the recorder saw them.
    let exposition = metrics.render();
    let counted = exposition
        .lines()
        .filter(|l| l.starts_with("grpc_cluster_client_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(counted > 0.0, "observe: the observed calls are counted");
    for (row, spans) in [(1, &formatted_spans), (2, &unformatted_spans)] {
        assert!(
            spans.made() > 0,
            "observe: the calls of `{}` made no span",
            rows[row].name
        );
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Observability cost: `ClientHandle::call` failfast, 1 node\n\n\
         Not observed: no metrics recorder, no `tracing` subscriber. Observed: the Prometheus \
         recorder of `grpc_cluster::metrics::install` and a subscriber at info (each call a \
         `call` and an `attempt` span, and its counters and histogram): \
         `tracing_subscriber`'s registry alone, which keeps the spans and has no output \
         (the target's row), or `tracing_subscriber::fmt` writing to a sink, which also \
         formats each span's fields as the span is made and recorded. Every row runs each call under \
         `WithDispatch` (the plain row with no subscriber). Rows interleaved as in `unary`, {rounds} rounds, \
         {THROUGHPUT_CALLS} calls at c={CONCURRENCY} per row and round; {counted:.0} calls \
         counted by the recorder.\n"
    );
    table_head(
        &mut out,
        &format!(
            "| client | p50 µs (c=1) | calls/s (c={CONCURRENCY}) | p50 ratio | throughput ratio |"
        ),
    );
    let (base_p50, base_rps) = (&rows[0].p50, &rows[0].rps);
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.name,
            value(&row.p50, 1),
            value(&row.rps, 0),
            ratio_text(&row.p50, base_p50),
            ratio_text(&row.rps, base_rps),
        );
    }
    report.section(out);
    report.target(Target::at_least(
        format!("observed (spans kept, no output) / not observed throughput (c={CONCURRENCY})"),
        ratio(&rows[2].rps, base_rps),
        0.97,
    ));
}
