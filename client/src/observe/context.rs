//! W3C trace context (`traceparent`, `tracestate`) on outgoing attempts.
//!
//! With the `opentelemetry` feature, an attempt carries the OpenTelemetry
//! context of its span (set by `tracing-opentelemetry`'s layer): the trace id,
//! the attempt span's id as the parent, the sampled flag and the trace state.
//! A call whose metadata carries a `traceparent` already (an inherited one)
//! keeps it. Without the feature, or without a valid context, nothing is
//! added.

use tonic::metadata::MetadataMap;
use tracing::Span;

/// The W3C header naming the trace and the parent span.
#[cfg(feature = "opentelemetry")]
pub(crate) const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendor trace state.
#[cfg(feature = "opentelemetry")]
pub(crate) const TRACESTATE: &str = "tracestate";

/// Adds the trace context of `span` to `metadata`; see the [module docs](self).
#[cfg(feature = "opentelemetry")]
pub(crate) fn inject(span: &Span, metadata: &mut MetadataMap) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    if span.is_disabled() {
        return;
    }
    let context = span.context();
    let span_ref = context.span();
    let parent = span_ref.span_context();
    if !parent.is_valid() || metadata.contains_key(TRACEPARENT) {
        return;
    }
    let header = format!(
        "00-{}-{}-{:02x}",
        parent.trace_id(),
        parent.span_id(),
        parent.trace_flags().to_u8()
    );
    // Hex digits and dashes: always a valid metadata value.
    if let Ok(value) = header.parse() {
        metadata.insert(TRACEPARENT, value);
    }
    let state = parent.trace_state().header();
    if !state.is_empty() {
        if let Ok(value) = state.parse() {
            metadata.insert(TRACESTATE, value);
        }
    }
}

/// Adds nothing: the `opentelemetry` feature is off.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn inject(_span: &Span, _metadata: &mut MetadataMap) {}
