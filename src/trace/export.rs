//! Span export: finished spans wait in a bounded queue and a task sends
//! them to the OTLP collector in batches. A request never waits on it: a
//! full queue drops the span, a failed export drops the batch, and both
//! are counted (`pilotfish_spans_dropped_total`).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::build::BuildError;
use crate::config::{OtlpConfig, OtlpProtocol};
use crate::metrics::TelemetryMetrics;

/// How often a collector that keeps failing is logged about.
const WARN_EVERY: Duration = Duration::from_secs(60);

enum Message {
    Span(Box<SpanData>),
    /// Send what is queued now, then answer.
    Flush(oneshot::Sender<()>),
}

/// The queue in front of one OTLP exporter.
#[derive(Debug)]
pub struct Exporter {
    queue: mpsc::Sender<Message>,
    scope: InstrumentationScope,
    metrics: TelemetryMetrics,
    /// The settings it was built from, to keep it across config reloads.
    config: OtlpConfig,
    service: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Span(_) => "Span",
            Self::Flush(_) => "Flush",
        })
    }
}

impl Exporter {
    /// Builds the OTLP exporter of `config` and starts its task, which
    /// ends once every handle is gone and the queue is sent. Must run
    /// inside the Tokio runtime.
    pub fn start(
        config: &OtlpConfig,
        service: &str,
        namespace: &str,
        metrics: TelemetryMetrics,
    ) -> Result<Arc<Self>, BuildError> {
        let endpoint = config.url();
        let timeout = config.timeout.0;
        let built = match config.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(timeout)
                .build(),
            OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint.clone())
                .with_timeout(timeout)
                .build(),
        };
        let mut exporter = built.map_err(|e| {
            BuildError::config(format!("tracing.otlp: cannot export to {endpoint}: {e}"))
        })?;
        let pod = crate::telemetry::Pod::from_env().attributes();
        exporter.set_resource(
            &Resource::builder()
                .with_service_name(service.to_owned())
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.namespace",
                    namespace.to_owned(),
                ))
                .with_attributes(
                    pod.into_iter()
                        .map(|(key, value)| opentelemetry::KeyValue::new(key, value)),
                )
                .build(),
        );
        let (queue, rx) = mpsc::channel(*config.max_queue);
        let batch = Batching {
            max_batch: *config.max_batch,
            interval: config.flush_interval.0,
            timeout,
            endpoint: endpoint.clone(),
        };
        tokio::spawn(run(rx, exporter, batch, metrics.clone()));
        info!(%endpoint, protocol = ?config.protocol, "exporting spans");
        Ok(Arc::new(Self {
            queue,
            scope: InstrumentationScope::builder("pilotfish")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            metrics,
            config: config.clone(),
            service: format!("{namespace}/{service}"),
        }))
    }

    /// Whether it was built from these settings, for this service.
    pub fn serves(&self, config: &OtlpConfig, service: &str, namespace: &str) -> bool {
        self.config == *config && self.service == format!("{namespace}/{service}")
    }

    /// The instrumentation scope of every span.
    pub fn scope(&self) -> &InstrumentationScope {
        &self.scope
    }

    /// Queues a finished span, or drops and counts it when the queue is
    /// full (the collector is slow or down).
    pub fn submit(&self, span: SpanData) {
        if self.queue.try_send(Message::Span(Box::new(span))).is_err() {
            self.metrics.spans_dropped("queue_full", 1);
        }
    }

    /// Sends every queued span now, waiting up to `timeout`: on shutdown.
    pub async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        let flushed = async {
            if self.queue.send(Message::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(timeout, flushed).await.is_err() {
            warn!("spans not all exported before shutdown");
        }
    }
}

struct Batching {
    max_batch: usize,
    interval: Duration,
    timeout: Duration,
    endpoint: String,
}

/// Collects spans into batches of at most `max_batch`, sent when full or
/// `interval` after their first span, one export at a time.
async fn run(
    mut rx: mpsc::Receiver<Message>,
    exporter: opentelemetry_otlp::SpanExporter,
    settings: Batching,
    metrics: TelemetryMetrics,
) {
    let mut failures = Failures::default();
    let mut batch = Vec::with_capacity(settings.max_batch);
    while let Some(first) = rx.recv().await {
        let mut flushed = None;
        match first {
            Message::Span(span) => batch.push(*span),
            Message::Flush(done) => flushed = Some(done),
        }
        let due = Instant::now() + settings.interval;
        while flushed.is_none() && batch.len() < settings.max_batch {
            match tokio::time::timeout_at(due, rx.recv()).await {
                Ok(Some(Message::Span(span))) => batch.push(*span),
                Ok(Some(Message::Flush(done))) => flushed = Some(done),
                Ok(None) | Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let spans = std::mem::replace(&mut batch, Vec::with_capacity(settings.max_batch));
            let count = spans.len() as u64;
            match tokio::time::timeout(settings.timeout, exporter.export(spans)).await {
                Ok(Ok(())) => {
                    metrics.spans_exported(count);
                    failures.recovered(&settings.endpoint);
                }
                Ok(Err(e)) => {
                    metrics.spans_dropped("export_failed", count);
                    failures.failed(&settings.endpoint, &e, count);
                }
                Err(_) => {
                    metrics.spans_dropped("export_failed", count);
                    failures.failed(&settings.endpoint, &"no answer within the timeout", count);
                }
            }
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
    let _ = exporter.shutdown();
}

/// Logs a failing collector once a minute, not once per batch.
#[derive(Default)]
struct Failures {
    since: Option<Instant>,
    last_warned: Option<Instant>,
    dropped: u64,
}

impl Failures {
    fn failed(&mut self, endpoint: &str, error: &dyn std::fmt::Display, count: u64) {
        let now = Instant::now();
        self.since.get_or_insert(now);
        self.dropped += count;
        if self.last_warned.is_none_or(|at| now - at >= WARN_EVERY) {
            self.last_warned = Some(now);
            warn!(
                %endpoint,
                dropped_spans = self.dropped,
                "cannot export spans: {error}"
            );
        }
    }

    fn recovered(&mut self, endpoint: &str) {
        if self.since.take().is_some() {
            info!(%endpoint, dropped_spans = self.dropped, "exporting spans again");
            self.dropped = 0;
            self.last_warned = None;
        }
    }
}
