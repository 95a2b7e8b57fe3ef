//! W3C trace context on inbound requests.
//!
//! With the `opentelemetry` feature, a request's `traceparent` (and
//! `tracestate`) becomes the remote parent of its `request` span, so spans
//! of the handler, and calls it makes inside its span, continue the caller's
//! trace. A missing or malformed header leaves the span a root of its own.

use http::HeaderMap;
use tracing::Span;

/// Makes the trace context of `headers` the parent of `span`.
#[cfg(feature = "opentelemetry")]
pub(crate) fn set_parent(span: &Span, headers: &HeaderMap) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let Some(parent) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse(v, headers.get("tracestate").and_then(|v| v.to_str().ok())))
    else {
        return;
    };
    let context = opentelemetry::Context::new().with_remote_span_context(parent);
    // Fails only without an OpenTelemetry layer: then there is no trace to join.
    let _ = span.set_parent(context);
}

/// Does nothing: the `opentelemetry` feature is off.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn set_parent(_span: &Span, _headers: &HeaderMap) {}

/// Parses a version-00 `traceparent` (`00-<32 hex trace id>-<16 hex parent
/// id>-<2 hex flags>`); `None` when malformed or all-zero ids. Later versions
/// are read by their first four fields, as the W3C recommendation asks.
#[cfg(feature = "opentelemetry")]
fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    if !hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
        return None;
    }
    if !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    );
    context.is_valid().then_some(context)
}

#[cfg(all(test, feature = "opentelemetry"))]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_read() {
        let parsed = parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("congo=t61rcWkgMzE"),
        )
        .expect("valid");
        assert_eq!(
            parsed.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parsed.is_sampled());
        assert!(parsed.is_remote());
        assert_eq!(parsed.trace_state().get("congo"), Some("t61rcWkgMzE"));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad, None).is_none(), "{bad:?}");
        }
    }
}
