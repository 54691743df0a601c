//! Tunnels: upgraded connections (WebSockets), CONNECT tunnels and opaque
//! TCP connections, by direction, destination (outbound) or this service
//! (inbound), kind, and how they ended.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{counter, register};

/// The tunnel families.
#[derive(Debug, Clone)]
pub struct TunnelMetrics {
    opened: IntCounterVec,
    closed: IntCounterVec,
    active: IntGaugeVec,
    sent: IntCounterVec,
    received: IntCounterVec,
    duration: HistogramVec,
}

/// Buckets for how long tunnels live: a second to a day.
const DURATION_BUCKETS: [f64; 10] = [
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    12.0 * 3600.0,
    86400.0,
];

/// What a tunnel is counted under: values from the config and fixed
/// vocabularies only.
#[derive(Debug, Clone, Copy)]
pub struct TunnelLabels<'a> {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The destination (outbound) or this service (inbound).
    pub service: &'a str,
    /// `websocket`, `upgrade` (another protocol), `connect` or `opaque`.
    pub kind: &'static str,
}

impl TunnelMetrics {
    pub(super) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let labels = &["direction", "service", "kind"];
        Ok(Self {
            opened: counter(
                registry,
                "pilotfish_tunnels_opened_total",
                "Tunnels opened (WebSockets and other upgrades, CONNECT, opaque TCP), by direction, service and kind.",
                labels,
            )?,
            closed: counter(
                registry,
                "pilotfish_tunnels_closed_total",
                "Tunnels closed, by direction, service, kind and end (closed, idle, error, shutdown).",
                &["direction", "service", "kind", "end"],
            )?,
            active: register(
                registry,
                IntGaugeVec::new(
                    Opts::new("pilotfish_tunnels_active", "Tunnels open now."),
                    labels,
                )?,
            )?,
            sent: counter(
                registry,
                "pilotfish_tunnel_sent_bytes_total",
                "Bytes carried from the client (the app outbound, the peer inbound) to the upstream, by direction, service and kind.",
                labels,
            )?,
            received: counter(
                registry,
                "pilotfish_tunnel_received_bytes_total",
                "Bytes carried from the upstream back to the client.",
                labels,
            )?,
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "pilotfish_tunnel_duration_seconds",
                        "How long tunnels lived, by direction, service and kind.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    labels,
                )?,
            )?,
        })
    }

    /// A tunnel opened.
    pub fn opened(&self, labels: TunnelLabels<'_>) {
        let values = [labels.direction, labels.service, labels.kind];
        self.opened.with_label_values(&values).inc();
        self.active.with_label_values(&values).inc();
    }

    /// A tunnel that [`Self::opened`] closed.
    pub fn closed(
        &self,
        labels: TunnelLabels<'_>,
        end: &'static str,
        carried: (u64, u64),
        lived: Duration,
    ) {
        let values = [labels.direction, labels.service, labels.kind];
        self.active.with_label_values(&values).dec();
        self.closed
            .with_label_values(&[labels.direction, labels.service, labels.kind, end])
            .inc();
        self.sent.with_label_values(&values).inc_by(carried.0);
        self.received.with_label_values(&values).inc_by(carried.1);
        self.duration
            .with_label_values(&values)
            .observe(lived.as_secs_f64());
    }
}
