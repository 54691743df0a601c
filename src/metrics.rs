//! Metrics, registered on a registry the caller owns (never global), once
//! per process: config reloads keep counting into the same families.
//!
//! Label cardinality stays bounded: direction (2 values), service (the
//! configured services, plus `unknown` for requests that match no route),
//! status code, fixed reason vocabularies, and caller identities (the
//! workloads of the mesh, which the mTLS handshake has already proven).
//! No paths, no hosts or ids a client can invent.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, core::Collector,
};

use crate::http::Direction;

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
}

impl Metrics {
    /// Registers every family on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            requests: RequestMetrics::register(registry)?,
            tls: TlsMetrics::register(registry)?,
            authz: AuthzMetrics::register(registry)?,
            reloads: ReloadMetrics::register(registry)?,
            resilience: ResilienceMetrics::register(registry)?,
        })
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
            "Requests handled, by direction, destination service and response status.",
            &["direction", "service", "status"],
        )?;
        let duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "pilotfish_request_duration_seconds",
                    "Time from request received to response headers sent, by direction and service.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["direction", "service"],
            )?,
        )?;
        Ok(Self { requests, duration })
    }

    /// Counts one request.
    pub fn record(&self, direction: Direction, service: &str, status: StatusCode, took: Duration) {
        let direction = direction.as_str();
        self.requests
            .with_label_values(&[direction, service, status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[direction, service])
            .observe(took.as_secs_f64());
    }
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

    /// Counts a completed handshake.
    pub fn handshake(&self, direction: Direction, resumed: bool) {
        let kind = if resumed { "resumed" } else { "full" };
        self.handshakes
            .with_label_values(&[direction.as_str(), kind])
            .inc();
    }

    /// Counts a failed one.
    pub fn failure(&self, direction: Direction, reason: crate::tls::HandshakeFailure) {
        self.failures
            .with_label_values(&[direction.as_str(), reason.as_str()])
            .inc();
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

/// What the resilience policies did.
#[derive(Debug, Clone)]
pub struct ResilienceMetrics {
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
    limited: IntCounterVec,
    ejections: IntCounterVec,
    breaker: prometheus::IntGaugeVec,
    fallbacks: IntCounterVec,
    timeouts: IntCounterVec,
    /// The destination whose counters this handle adds to (empty for the
    /// handle shared by all).
    service: Option<std::sync::Arc<str>>,
}

impl ResilienceMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
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
            service: None,
        })
    }

    /// A handle that counts for `service`.
    pub fn for_service(&self, service: &str) -> Self {
        Self {
            service: Some(service.into()),
            ..self.clone()
        }
    }

    fn name(&self) -> &str {
        self.service.as_deref().unwrap_or("unknown")
    }

    /// A retry was sent.
    pub fn retry(&self, condition: &str) {
        self.retries
            .with_label_values(&[self.name(), condition])
            .inc();
    }

    /// The budget refused a retry.
    pub fn budget_exhausted(&self) {
        self.budget_exhausted
            .with_label_values(&[self.name()])
            .inc();
    }

    /// A limit refused a request.
    pub fn limited(&self, limit: &str) {
        self.limited.with_label_values(&[self.name(), limit]).inc();
    }

    /// An endpoint was ejected.
    pub fn ejected(&self) {
        self.ejections.with_label_values(&[self.name()]).inc();
    }

    /// The breaker changed state.
    pub fn breaker_state(&self, state: crate::outbound::policy::breaker::BreakerState) {
        use crate::outbound::policy::breaker::BreakerState;
        let value = match state {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        self.breaker.with_label_values(&[self.name()]).set(value);
    }

    /// A request (`request`) or one attempt (`attempt`) timed out.
    pub fn timed_out(&self, kind: &str) {
        self.timeouts.with_label_values(&[self.name(), kind]).inc();
    }

    /// The open breaker answered a request.
    pub fn fallback(&self, how: &str) {
        self.fallbacks.with_label_values(&[self.name(), how]).inc();
    }
}
