//! A real Prometheus scrapes a sidecar (being written).
