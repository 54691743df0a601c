//! Distributed tracing: the trace context read from and written to headers
//! ([`propagation`]), the sampling decision, spans, and their export over
//! OTLP ([`export`]).
//!
//! Every hop keeps the trace id and makes its own span id, sampled or not,
//! so the apps' own tracers and other sidecars always see one trace. Only a
//! sampled span with an exporter configured records anything: the rest
//! cost two random numbers and a header.
//!
//! Spans are the OpenTelemetry SDK's [`SpanData`], exported by its OTLP
//! exporters. The SDK's tracer is not used: it picks span ids itself and
//! would allocate a span per request even when nothing is recorded, and its
//! batch processor drops spans without counting them.

pub mod export;
pub mod propagation;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

pub use self::export::Exporter;
use self::propagation::{Extracted, Format};
use crate::config::TracingConfig;

/// The tracing settings of one config generation.
#[derive(Debug)]
pub struct Tracer {
    formats: Vec<Format>,
    /// A new trace is sampled when the low 63 bits of its id fall under
    /// this: OpenTelemetry's `TraceIdRatioBased` rule, so every tracer
    /// with the same ratio decides the same for the same trace.
    ratio_bound: u64,
    /// Where recorded spans go; `None`: nothing is recorded.
    exporter: Option<Arc<Exporter>>,
}

impl Tracer {
    /// The tracer of `config`, exporting to `exporter` if any.
    pub fn new(config: &TracingConfig, exporter: Option<Arc<Exporter>>) -> Self {
        let ratio = config.sample_ratio.get().clamp(0.0, 1.0);
        let ratio_bound = if ratio >= 1.0 {
            u64::MAX
        } else {
            // Exact for every ratio a config can write: the product is
            // below 2^63.
            (ratio * (1u64 << 63) as f64) as u64
        };
        Self {
            formats: config.propagation.get().clone(),
            ratio_bound,
            exporter,
        }
    }

    /// The exporter, if spans are exported.
    pub fn exporter(&self) -> Option<&Arc<Exporter>> {
        self.exporter.as_ref()
    }

    /// The caller's trace context in `headers`.
    pub fn extract(&self, headers: &http::HeaderMap) -> Extracted {
        propagation::extract(headers, &self.formats)
    }

    /// Writes `span`'s context into `headers`, as its child's parent.
    pub fn inject(&self, headers: &mut http::HeaderMap, span: &SpanContext) {
        propagation::inject(headers, span, &self.formats);
    }

    /// Starts a span whose parent is the caller's (a new trace when the
    /// caller sent none). The caller's sampling decision is followed; a
    /// caller that made none gets this sidecar's ratio.
    pub fn start(&self, caller: &Extracted, kind: SpanKind, name: &'static str) -> Span {
        let (trace_id, parent, parent_remote, state) = match &caller.parent {
            Some(parent) => (
                parent.trace_id(),
                parent.span_id(),
                true,
                parent.trace_state().clone(),
            ),
            None => (
                propagation::new_trace_id(),
                SpanId::INVALID,
                false,
                TraceState::NONE,
            ),
        };
        let sampled = caller.sampled.unwrap_or_else(|| self.samples(trace_id));
        self.span(trace_id, parent, parent_remote, sampled, state, kind, name)
    }

    /// Starts a child of a span of this sidecar.
    pub fn child(&self, parent: &SpanContext, kind: SpanKind, name: &'static str) -> Span {
        self.span(
            parent.trace_id(),
            parent.span_id(),
            false,
            parent.is_sampled(),
            parent.trace_state().clone(),
            kind,
            name,
        )
    }

    /// Whether a new trace with this id is sampled.
    fn samples(&self, trace_id: TraceId) -> bool {
        if self.ratio_bound == u64::MAX {
            return true;
        }
        let bytes = trace_id.to_bytes();
        let mut low = [0; 8];
        low.copy_from_slice(&bytes[8..]);
        (u64::from_be_bytes(low) >> 1) < self.ratio_bound
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        trace_id: TraceId,
        parent: SpanId,
        parent_remote: bool,
        sampled: bool,
        state: TraceState,
        kind: SpanKind,
        name: &'static str,
    ) -> Span {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let context = SpanContext::new(trace_id, propagation::new_span_id(), flags, false, state);
        let recording = match (&self.exporter, sampled) {
            (Some(exporter), true) => Some(Box::new(Recording {
                exporter: exporter.clone(),
                parent,
                parent_remote,
                kind,
                name: Cow::Borrowed(name),
                start: SystemTime::now(),
                attributes: Vec::with_capacity(16),
                status: Status::Unset,
            })),
            _ => None,
        };
        Span { context, recording }
    }
}

/// One span of this sidecar. Ends (and, when recorded, goes to the
/// exporter) when dropped.
#[derive(Debug)]
pub struct Span {
    context: SpanContext,
    recording: Option<Box<Recording>>,
}

#[derive(Debug)]
struct Recording {
    exporter: Arc<Exporter>,
    parent: SpanId,
    parent_remote: bool,
    kind: SpanKind,
    name: Cow<'static, str>,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    status: Status,
}

impl Span {
    /// Its ids and flags, to propagate.
    pub fn context(&self) -> &SpanContext {
        &self.context
    }

    /// Whether it is recorded: build attributes only then.
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Sets an attribute (nothing when not recording).
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(recording) = &mut self.recording {
            recording.attributes.push(KeyValue::new(key, value));
        }
    }

    /// Renames it (a server span learns its route late).
    pub fn rename(&mut self, name: impl Into<Cow<'static, str>>) {
        if let Some(recording) = &mut self.recording {
            recording.name = name.into();
        }
    }

    /// Marks it failed, with why.
    pub fn fail(&mut self, description: impl Into<Cow<'static, str>>) {
        if let Some(recording) = &mut self.recording {
            recording.status = Status::error(description);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(recording) = self.recording.take() else {
            return;
        };
        let Recording {
            exporter,
            parent,
            parent_remote,
            kind,
            name,
            start,
            attributes,
            status,
        } = *recording;
        exporter.submit(SpanData {
            span_context: self.context.clone(),
            parent_span_id: parent,
            parent_span_is_remote: parent_remote,
            span_kind: kind,
            name,
            start_time: start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: exporter.scope().clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Located;

    fn tracer(ratio: f64) -> Tracer {
        let config = TracingConfig {
            sample_ratio: Located::new(ratio),
            ..TracingConfig::default()
        };
        Tracer::new(&config, None)
    }

    fn caller(sampled: Option<bool>) -> Extracted {
        let flags = if sampled == Some(true) {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Extracted {
            parent: Some(SpanContext::new(
                TraceId::from_bytes([7; 16]),
                SpanId::from_bytes([9; 8]),
                flags,
                true,
                TraceState::NONE,
            )),
            sampled,
        }
    }

    #[test]
    fn a_caller_decision_is_followed_whatever_the_ratio() {
        let span = tracer(0.0).start(&caller(Some(true)), SpanKind::Server, "GET");
        assert!(span.context().is_sampled());
        assert_eq!(span.context().trace_id(), TraceId::from_bytes([7; 16]));
        assert_ne!(span.context().span_id(), SpanId::from_bytes([9; 8]));
        let span = tracer(1.0).start(&caller(Some(false)), SpanKind::Server, "GET");
        assert!(!span.context().is_sampled());
    }

    #[test]
    fn without_a_decision_the_ratio_decides() {
        let all = tracer(1.0);
        let none = tracer(0.0);
        for _ in 0..100 {
            assert!(
                all.start(&Extracted::default(), SpanKind::Client, "GET")
                    .context()
                    .is_sampled()
            );
            assert!(
                !none
                    .start(&Extracted::default(), SpanKind::Client, "GET")
                    .context()
                    .is_sampled()
            );
        }
        // Deferred B3: ids, no decision.
        assert!(
            all.start(&caller(None), SpanKind::Server, "GET")
                .context()
                .is_sampled()
        );
    }

    #[test]
    fn the_ratio_is_roughly_kept_and_agrees_with_opentelemetry() {
        let half = tracer(0.5);
        let sampled = (0..10_000)
            .filter(|_| half.samples(propagation::new_trace_id()))
            .count();
        assert!((4_000..6_000).contains(&sampled), "{sampled} of 10000");
        // The low 64 bits decide: 0x7fff... >> 1 is under half of 2^63.
        let mut id = [0; 16];
        id[8] = 0x7f;
        assert!(half.samples(TraceId::from_bytes(id)));
        id[8] = 0x80;
        assert!(!half.samples(TraceId::from_bytes(id)));
    }

    #[test]
    fn children_keep_the_trace_and_the_decision() {
        let tracer = tracer(1.0);
        let parent = tracer.start(&Extracted::default(), SpanKind::Client, "GET");
        let child = tracer.child(parent.context(), SpanKind::Client, "GET");
        assert_eq!(child.context().trace_id(), parent.context().trace_id());
        assert_ne!(child.context().span_id(), parent.context().span_id());
        assert!(child.context().is_sampled());
        assert!(!child.is_recording(), "no exporter, nothing recorded");
    }
}
