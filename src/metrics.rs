//! Request metrics, registered on a registry the caller owns (never global).
//!
//! Label cardinality stays bounded: direction (2 values), service (the
//! configured services, plus `unknown` for requests that match no route)
//! and status code (at most a few dozen in practice). No paths, no ids.

use std::time::Duration;

use http::StatusCode;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::http::Direction;

/// Latency buckets in seconds, fine below a millisecond where a proxy hop
/// lives, coarse up to the 30s a slow upstream might take.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Counters and histograms of proxied requests.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl RequestMetrics {
    /// Registers the request metrics on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "pilotfish_requests_total",
                "Requests handled, by direction, destination service and response status.",
            ),
            &["direction", "service", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "pilotfish_request_duration_seconds",
                "Time from request received to response headers sent, by direction and service.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["direction", "service"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
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
