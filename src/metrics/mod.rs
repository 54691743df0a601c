//! Metrics, registered on a registry the caller owns (never global), once
//! per process: config reloads keep counting into the same families.
//!
//! Label cardinality stays bounded: direction (2 values), service (the
//! configured services, plus `unknown` for requests that match no route),
//! status code, fixed reason vocabularies, and caller identities (the
//! workloads of the mesh, which the mTLS handshake has already proven).
//! No paths, no hosts or ids a client can invent.

mod tunnel;

pub use self::tunnel::{TunnelLabels, TunnelMetrics};

use std::time::{Duration, SystemTime};

use http::StatusCode;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, core::Collector,
};

/// Latency buckets in seconds, fine below a millisecond where a proxy hop
/// lives, coarse up to the 30s a slow upstream might take.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Every metric family of the sidecar.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Proxied requests.
    pub requests: RequestMetrics,
    /// TLS handshakes and certificates.
    pub tls: TlsMetrics,
    /// Authorization decisions.
    pub authz: AuthzMetrics,
    /// Config and certificate reloads.
    pub reloads: ReloadMetrics,
    /// Retries, limits, breakers, ejections.
    pub resilience: ResilienceMetrics,
    /// Accepted TCP connections and their bytes.
    pub connections: ConnectionMetrics,
    /// Span export and access logs.
    pub telemetry: TelemetryMetrics,
    /// Rate limit decisions and global limits' health.
    pub rate_limits: RateLimitMetrics,
    /// WebSockets, CONNECT tunnels, opaque TCP.
    pub tunnels: TunnelMetrics,
}

impl Metrics {
    /// Registers every family on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        register_process(registry)?;
        Ok(Self {
            requests: RequestMetrics::register(registry)?,
            tls: TlsMetrics::register(registry)?,
            authz: AuthzMetrics::register(registry)?,
            reloads: ReloadMetrics::register(registry)?,
            resilience: ResilienceMetrics::register(registry)?,
            connections: ConnectionMetrics::register(registry)?,
            telemetry: TelemetryMetrics::register(registry)?,
            rate_limits: RateLimitMetrics::register(registry)?,
            tunnels: TunnelMetrics::register(registry)?,
        })
    }
}

/// CPU, memory, file descriptors and threads of this process (the
/// standard `process_*` set, under the `pilotfish_` prefix), and the
/// build's version.
fn register_process(registry: &Registry) -> Result<(), prometheus::Error> {
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::new(
            std::process::id() as i32,
            "pilotfish",
        ),
    ))?;
    let info = register(
        registry,
        prometheus::IntGaugeVec::new(
            Opts::new(
                "pilotfish_build_info",
                "Always 1; the labels say which build runs.",
            ),
            &["version", "profile"],
        )?,
    )?;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), profile])
        .set(1);
    registry.register(Box::new(RuntimeTasks::new()?))?;
    Ok(())
}

/// `pilotfish_runtime_tasks`: tasks alive in the async runtime (one per
/// connection, request stream and background job), read when scraped: a
/// count that grows without bound is a leak.
struct RuntimeTasks {
    gauge: prometheus::IntGauge,
}

impl RuntimeTasks {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            gauge: prometheus::IntGauge::new(
                "pilotfish_runtime_tasks",
                "Tasks alive in the async runtime: connections, HTTP/2 streams, background jobs.",
            )?,
        })
    }
}

impl Collector for RuntimeTasks {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let alive = runtime.metrics().num_alive_tasks();
            self.gauge.set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        self.gauge.collect()
    }
}

fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> Result<C, prometheus::Error> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// Counters and histograms of proxied requests.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl RequestMetrics {
    /// Registers the request metrics on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = counter(
            registry,
            "pilotfish_requests_total",
            "Requests handled, by direction, destination service, route, calling peer (inbound) and response status.",
            &["direction", "service", "route", "peer", "status"],
        )?;
        let duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "pilotfish_request_duration_seconds",
                    "Time from request received to response headers sent, by direction, service and route.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["direction", "service", "route"],
            )?,
        )?;
        Ok(Self { requests, duration })
    }

    /// Counts one request. `route` and `peer` come from the config and
    /// the mTLS handshake, never from the request, so they stay bounded.
    pub fn record(&self, labels: RequestLabels<'_>, status: StatusCode, took: Duration) {
        let direction = labels.direction;
        self.requests
            .with_label_values(&[
                direction,
                labels.service,
                labels.route,
                labels.peer,
                status.as_str(),
            ])
            .inc();
        self.duration
            .with_label_values(&[direction, labels.service, labels.route])
            .observe(took.as_secs_f64());
    }
}

/// What a request is counted under.
#[derive(Debug, Clone, Copy)]
pub struct RequestLabels<'a> {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Outbound: the destination; inbound: this service.
    pub service: &'a str,
    /// The route's name (outbound), empty inbound.
    pub route: &'a str,
    /// Inbound: the caller's SPIFFE id; empty outbound.
    pub peer: &'a str,
}

/// TLS handshakes and the certificate in force.
#[derive(Debug, Clone)]
pub struct TlsMetrics {
    handshakes: IntCounterVec,
    failures: IntCounterVec,
    expiry: Gauge,
}

impl TlsMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            handshakes: counter(
                registry,
                "pilotfish_tls_handshakes_total",
                "Completed TLS handshakes, by direction and kind (full or resumed).",
                &["direction", "kind"],
            )?,
            failures: counter(
                registry,
                "pilotfish_tls_handshake_failures_total",
                "Failed TLS handshakes and refused peer identities, by direction and reason.",
                &["direction", "reason"],
            )?,
            expiry: register(
                registry,
                Gauge::new(
                    "pilotfish_certificate_expiry_timestamp_seconds",
                    "When this workload's certificate in force expires (Unix time).",
                )?,
            )?,
        })
    }

    /// Counts a completed handshake; `direction` is `inbound` or
    /// `outbound`.
    pub fn handshake(&self, direction: &'static str, resumed: bool) {
        let kind = if resumed { "resumed" } else { "full" };
        self.handshakes.with_label_values(&[direction, kind]).inc();
    }

    /// Counts a failed one, with its reason (a fixed vocabulary:
    /// `tls::HandshakeFailure`).
    pub fn failure(&self, direction: &'static str, reason: &'static str) {
        self.failures.with_label_values(&[direction, reason]).inc();
    }

    /// Records the expiry of the certificate in force.
    pub fn set_expiry(&self, not_after: SystemTime) {
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.expiry.set(secs);
    }
}

/// Requests refused by the authorization policy.
#[derive(Debug, Clone)]
pub struct AuthzMetrics {
    denied: IntCounterVec,
}

impl AuthzMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            denied: counter(
                registry,
                "pilotfish_authz_denied_total",
                "Inbound requests refused by the authorization policy, by caller identity and reason.",
                &["caller", "reason"],
            )?,
        })
    }

    /// Counts a denied request.
    pub fn denied(&self, caller: &str, reason: &str) {
        self.denied.with_label_values(&[caller, reason]).inc();
    }
}

/// Config and certificate reloads.
#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    reloads: IntCounterVec,
    last_config: Gauge,
}

impl ReloadMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            reloads: counter(
                registry,
                "pilotfish_reloads_total",
                "Reload attempts, by what was reloaded (config or certificates) and result (applied or rejected).",
                &["kind", "result"],
            )?,
            last_config: register(
                registry,
                Gauge::new(
                    "pilotfish_config_loaded_timestamp_seconds",
                    "When the config in force was loaded (Unix time).",
                )?,
            )?,
        })
    }

    /// Counts a reload attempt; `kind` is `config` or `certificates`.
    pub fn reload(&self, kind: &str, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.reloads.with_label_values(&[kind, result]).inc();
    }

    /// Records when the config in force was loaded.
    pub fn config_loaded(&self, at: SystemTime) {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_config.set(secs);
    }
}

/// What the resilience policies did. A handle is cloned into the policy
/// layers of every request, so it is one pointer.
#[derive(Debug, Clone)]
pub struct ResilienceMetrics(std::sync::Arc<ServiceResilience>);

#[derive(Debug)]
struct ServiceResilience {
    families: std::sync::Arc<ResilienceFamilies>,
    /// The destination whose counters this handle adds to (empty for the
    /// handle shared by all).
    service: Option<Box<str>>,
}

#[derive(Debug)]
struct ResilienceFamilies {
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
    limited: IntCounterVec,
    ejections: IntCounterVec,
    breaker: prometheus::IntGaugeVec,
    fallbacks: IntCounterVec,
    timeouts: IntCounterVec,
}

impl ResilienceMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let families = ResilienceFamilies {
            retries: counter(
                registry,
                "pilotfish_retries_total",
                "Retries sent, by destination service and the condition that called for them.",
                &["service", "condition"],
            )?,
            budget_exhausted: counter(
                registry,
                "pilotfish_retry_budget_exhausted_total",
                "Retries not sent because the destination's retry budget was spent.",
                &["service"],
            )?,
            limited: counter(
                registry,
                "pilotfish_limit_rejections_total",
                "Requests refused by a concurrency limit, by destination service and limit.",
                &["service", "limit"],
            )?,
            ejections: counter(
                registry,
                "pilotfish_outlier_ejections_total",
                "Endpoints ejected after failures in a row, by destination service.",
                &["service"],
            )?,
            breaker: register(
                registry,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "pilotfish_breaker_state",
                        "State of the destination's error-rate breaker: 0 closed, 1 open, 2 half-open.",
                    ),
                    &["service"],
                )?,
            )?,
            fallbacks: counter(
                registry,
                "pilotfish_breaker_rejections_total",
                "Requests the open breaker answered, by destination service and how: static, service (a fallback destination) or none (503).",
                &["service", "fallback"],
            )?,
            timeouts: counter(
                registry,
                "pilotfish_timeouts_total",
                "Requests that timed out, by destination service and kind: request (all attempts) or attempt (one, per-try).",
                &["service", "kind"],
            )?,
        };
        Ok(Self(std::sync::Arc::new(ServiceResilience {
            families: std::sync::Arc::new(families),
            service: None,
        })))
    }

    /// A handle that counts for `service`.
    pub fn for_service(&self, service: &str) -> Self {
        Self(std::sync::Arc::new(ServiceResilience {
            families: self.0.families.clone(),
            service: Some(service.into()),
        }))
    }

    fn name(&self) -> &str {
        self.0.service.as_deref().unwrap_or("unknown")
    }

    fn families(&self) -> &ResilienceFamilies {
        &self.0.families
    }

    /// A retry was sent.
    pub fn retry(&self, condition: &str) {
        self.families()
            .retries
            .with_label_values(&[self.name(), condition])
            .inc();
    }

    /// The budget refused a retry.
    pub fn budget_exhausted(&self) {
        self.families()
            .budget_exhausted
            .with_label_values(&[self.name()])
            .inc();
    }

    /// A limit refused a request.
    pub fn limited(&self, limit: &str) {
        self.families()
            .limited
            .with_label_values(&[self.name(), limit])
            .inc();
    }

    /// An endpoint was ejected.
    pub fn ejected(&self) {
        self.families()
            .ejections
            .with_label_values(&[self.name()])
            .inc();
    }

    /// The breaker changed state: 0 closed, 1 open, 2 half-open (as the
    /// gauge's help says).
    pub fn breaker_state(&self, value: i64) {
        self.families()
            .breaker
            .with_label_values(&[self.name()])
            .set(value);
    }

    /// A request (`request`) or one attempt (`attempt`) timed out.
    pub fn timed_out(&self, kind: &str) {
        self.families()
            .timeouts
            .with_label_values(&[self.name(), kind])
            .inc();
    }

    /// The open breaker answered a request.
    pub fn fallback(&self, how: &str) {
        self.families()
            .fallbacks
            .with_label_values(&[self.name(), how])
            .inc();
    }
}

/// Accepted TCP connections and their bytes, by listener (`inbound`,
/// `outbound`).
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    opened: IntCounterVec,
    refused: IntCounterVec,
    closed: IntCounterVec,
    active: prometheus::IntGaugeVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    detected: IntCounterVec,
}

impl ConnectionMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            opened: counter(
                registry,
                "pilotfish_tcp_connections_opened_total",
                "TCP connections accepted, by listener.",
                &["listener"],
            )?,
            refused: counter(
                registry,
                "pilotfish_tcp_connections_refused_total",
                "TCP connections closed at accept because the listener held its max_connections, by listener.",
                &["listener"],
            )?,
            closed: counter(
                registry,
                "pilotfish_tcp_connections_closed_total",
                "TCP connections closed, by listener.",
                &["listener"],
            )?,
            active: register(
                registry,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "pilotfish_tcp_connections_active",
                        "TCP connections open now, by listener.",
                    ),
                    &["listener"],
                )?,
            )?,
            received: counter(
                registry,
                "pilotfish_tcp_received_bytes_total",
                "Bytes read from accepted connections (TLS records included), by listener.",
                &["listener"],
            )?,
            sent: counter(
                registry,
                "pilotfish_tcp_sent_bytes_total",
                "Bytes written to accepted connections (TLS records included), by listener.",
                &["listener"],
            )?,
            detected: counter(
                registry,
                "pilotfish_protocol_detected_total",
                "Connections captured to the outbound listener, by the protocol detected (http1, http2, tls, opaque) and what decided it (first-bytes, timeout, port).",
                &["protocol", "by"],
            )?,
        })
    }

    /// The counters of one listener, resolved once so a connection pays
    /// an atomic add per read or write and no label lookup.
    pub fn for_listener(&self, listener: &str) -> ListenerCounters {
        ListenerCounters {
            opened: self.opened.with_label_values(&[listener]),
            refused: self.refused.with_label_values(&[listener]),
            closed: self.closed.with_label_values(&[listener]),
            active: self.active.with_label_values(&[listener]),
            received: self.received.with_label_values(&[listener]),
            sent: self.sent.with_label_values(&[listener]),
            detected: self.detected.clone(),
        }
    }
}

/// The connection counters of one listener.
#[derive(Debug, Clone)]
pub struct ListenerCounters {
    /// Accepted.
    pub opened: prometheus::IntCounter,
    /// Closed at accept, over the cap.
    pub refused: prometheus::IntCounter,
    /// Closed.
    pub closed: prometheus::IntCounter,
    /// Open now.
    pub active: prometheus::IntGauge,
    /// Bytes read.
    pub received: prometheus::IntCounter,
    /// Bytes written.
    pub sent: prometheus::IntCounter,
    /// Captured connections by protocol detected.
    detected: IntCounterVec,
}

impl ListenerCounters {
    /// Counts a captured connection's detected protocol: `by` is
    /// `first-bytes`, `timeout` or `port`.
    pub fn detected(&self, protocol: &'static str, by: &'static str) {
        self.detected.with_label_values(&[protocol, by]).inc();
    }
}

/// Span export and access log lines.
#[derive(Debug, Clone)]
pub struct TelemetryMetrics {
    spans_exported: prometheus::IntCounter,
    spans_dropped: IntCounterVec,
    access_log_dropped: prometheus::IntCounter,
}

impl TelemetryMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            spans_exported: register(
                registry,
                prometheus::IntCounter::new(
                    "pilotfish_spans_exported_total",
                    "Spans the OTLP collector accepted.",
                )?,
            )?,
            spans_dropped: counter(
                registry,
                "pilotfish_spans_dropped_total",
                "Spans not exported, by reason: queue_full (the collector is slower than the traffic) or export_failed (the collector refused or did not answer).",
                &["reason"],
            )?,
            access_log_dropped: register(
                registry,
                prometheus::IntCounter::new(
                    "pilotfish_access_log_dropped_total",
                    "Access log lines not written because stdout could not keep up.",
                )?,
            )?,
        };
        // Shown at 0 from the start, so a rate() over them works.
        for reason in ["queue_full", "export_failed"] {
            metrics.spans_dropped.with_label_values(&[reason]);
        }
        Ok(metrics)
    }

    /// Spans the collector took.
    pub fn spans_exported(&self, count: u64) {
        self.spans_exported.inc_by(count);
    }

    /// Spans dropped, and why.
    pub fn spans_dropped(&self, reason: &str, count: u64) {
        self.spans_dropped
            .with_label_values(&[reason])
            .inc_by(count);
    }

    /// An access log line dropped.
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    /// `n` access log lines were dropped.
    pub fn access_log_dropped_by(&self, n: u64) {
        self.access_log_dropped.inc_by(n);
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Rate limit decisions, and the health of global limits.
#[derive(Debug, Clone)]
pub struct RateLimitMetrics {
    decisions: IntCounterVec,
    degraded: prometheus::IntGaugeVec,
    replicas: prometheus::IntGaugeVec,
}

impl RateLimitMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            decisions: counter(
                registry,
                "pilotfish_rate_limit_decisions_total",
                "Requests a rate limit judged, by limit and decision: allowed, limited (refused with 429), or shadow_limited (over the limit, let through in shadow mode).",
                &["limit", "decision"],
            )?,
            degraded: register(
                registry,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "pilotfish_rate_limit_degraded",
                        "1 while a global limit cannot reach Redis and its on_failure policy decides, by limit.",
                    ),
                    &["limit"],
                )?,
            )?,
            replicas: register(
                registry,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "pilotfish_rate_limit_replicas",
                        "Replicas sharing a global limit, as Redis last said, by limit.",
                    ),
                    &["limit"],
                )?,
            )?,
        })
    }

    /// The counters of one limit, resolved once.
    pub fn for_limit(&self, limit: &str) -> LimitMetrics {
        LimitMetrics {
            name: limit.into(),
            allowed: self.decisions.with_label_values(&[limit, "allowed"]),
            limited: self.decisions.with_label_values(&[limit, "limited"]),
            shadow: self.decisions.with_label_values(&[limit, "shadow_limited"]),
            degraded: self.degraded.with_label_values(&[limit]),
            replicas: self.replicas.with_label_values(&[limit]),
        }
    }
}

/// The metrics of one limit.
#[derive(Debug, Clone)]
pub struct LimitMetrics {
    name: std::sync::Arc<str>,
    allowed: prometheus::IntCounter,
    limited: prometheus::IntCounter,
    shadow: prometheus::IntCounter,
    degraded: prometheus::IntGauge,
    replicas: prometheus::IntGauge,
}

impl LimitMetrics {
    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A request was let through.
    pub fn allowed(&self) {
        self.allowed.inc();
    }

    /// A request was refused.
    pub fn limited(&self) {
        self.limited.inc();
    }

    /// A request over the limit was let through (shadow mode).
    pub fn shadow_limited(&self) {
        self.shadow.inc();
    }

    /// Whether the fallback decides (Redis unreachable).
    pub fn degraded(&self, degraded: bool) {
        self.degraded.set(i64::from(degraded));
    }

    /// Replicas sharing the limit.
    pub fn replicas(&self, replicas: u32) {
        self.replicas.set(i64::from(replicas));
    }
}
