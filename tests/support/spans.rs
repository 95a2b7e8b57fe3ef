//! A `tracing` layer that keeps every span of the project's crates, with its
//! parent and fields, for tests to read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// One captured span.
#[derive(Debug, Clone)]
pub struct CapturedSpan {
    pub id: u64,
    pub name: String,
    pub parent: Option<u64>,
    pub fields: BTreeMap<String, String>,
}

/// The spans captured so far, shared with the layer.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<CapturedSpan>>>);

impl Captured {
    /// Every span named `name`, in creation order.
    pub fn named(&self, name: &str) -> Vec<CapturedSpan> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    /// A layer capturing the spans of targets starting with `prefixes`.
    pub fn layer(&self, prefixes: &'static [&'static str]) -> CaptureLayer {
        CaptureLayer {
            captured: self.clone(),
            prefixes,
        }
    }
}

/// See [`Captured::layer`].
pub struct CaptureLayer {
    captured: Captured,
    prefixes: &'static [&'static str],
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let target = attrs.metadata().target();
        if !self.prefixes.iter().any(|p| target.starts_with(p)) {
            return;
        }
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        self.captured.0.lock().expect("lock").push(CapturedSpan {
            id: id.into_u64(),
            name: attrs.metadata().name().to_owned(),
            parent,
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.captured.0.lock().expect("lock");
        // Span ids are reused after a span closes: the latest with this id.
        if let Some(span) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }
}
