//! Checks of `outbound:`: destinations and their resilience settings (the
//! routes: `route.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::Report;
use crate::config::{
    Config, DestinationConfig, FallbackConfig, Located, OutboundConfig, Position, RetryConfig,
    Transport, UpstreamProtocol,
};
use crate::identity::{ServiceName, SpiffeId, check_namespace};

pub(super) fn check_services(config: &Config, outbound: &OutboundConfig, r: &mut Report<'_>) {
    for (name, dst) in &outbound.services {
        let at = dst.position();
        if let Err(e) = ServiceName::new(name) {
            r.error(at, format!("outbound.services: {e}"));
        }
        if name == "passthrough" {
            r.error(
                at,
                "outbound.services: `passthrough` is reserved: it labels captured \
                 connections to addresses no destination has",
            );
        }
        match (&dst.dns, dst.endpoints.is_empty()) {
            (None, true) => r.error(at, format!("service {name:?} needs `endpoints` or `dns`")),
            (Some(dns), false) => r.error(
                dns.position(),
                format!("service {name:?}: give `endpoints` or `dns`, not both"),
            ),
            (Some(dns), true) => {
                if let Err(e) = crate::authority::parse_dns_target(dns) {
                    r.error(dns.position(), e);
                }
                if dst.dns_refresh.is_zero() {
                    r.error(
                        dst.dns_refresh.position(),
                        "dns_refresh must be more than 0",
                    );
                }
            }
            (None, false) => {}
        }
        for endpoint in &dst.endpoints {
            if endpoint.port() == 0 {
                r.error(endpoint.position(), "an endpoint needs a port other than 0");
            }
        }
        if let Some(ns) = &dst.namespace {
            if let Err(e) = check_namespace(ns) {
                r.error(at, e.to_string());
            }
        }
        if let Some(identity) = &dst.identity {
            if *dst.transport == Transport::Plaintext {
                r.error(
                    identity.position(),
                    format!(
                        "service {name:?}: identity needs transport: mtls (plaintext checks none)"
                    ),
                );
            } else if let Err(e) = expected_identity(config, name, dst) {
                r.error(identity.position(), e);
            }
        }
        for (field, value) in [
            ("connect_timeout", Some(dst.connect_timeout)),
            ("timeout", Some(dst.timeout)),
            ("per_try_timeout", dst.per_try_timeout),
            ("idle_timeout", Some(dst.idle_timeout)),
        ] {
            if value.is_some_and(|v| v.is_zero()) {
                r.error(at, format!("service {name:?}: {field} must be more than 0"));
            }
        }
        check_resilience(name, dst, r);
        check_opaque(name, dst, r);
        if let Some(fallback) = &dst.fallback {
            check_fallback(fallback, &outbound.services, at, r);
        }
    }
    let gateway_routes = config.gateway.iter().flat_map(|g| g.routes.iter());
    for service in outbound
        .routes
        .iter()
        .chain(gateway_routes)
        .flat_map(|route| route.services())
    {
        let opaque = outbound
            .services
            .get(service.as_str())
            .is_some_and(|dst| *dst.protocol == UpstreamProtocol::Opaque);
        if opaque {
            r.error(
                service.position(),
                format!(
                    "route to {:?}, an opaque destination: routes are for HTTP requests \
                     (an opaque destination is reached through its `listen` or CONNECT)",
                    service.get()
                ),
            );
        }
    }
}

/// `listen` and `port` belong to opaque destinations.
fn check_opaque(name: &str, dst: &DestinationConfig, r: &mut Report<'_>) {
    let opaque = *dst.protocol == UpstreamProtocol::Opaque;
    for (field, position) in [
        ("listen", dst.listen.as_ref().map(|l| l.position())),
        ("port", dst.port.as_ref().map(|p| p.position())),
    ] {
        if let (Some(position), false) = (position, opaque) {
            r.error(
                position,
                format!("service {name:?}: `{field}` is for protocol: opaque destinations"),
            );
        }
    }
    if let Some(listen) = &dst.listen
        && listen.port() == 0
    {
        r.error(
            listen.position(),
            "a destination's listen needs a port other than 0",
        );
    }
    if let Some(port) = dst.port.as_ref().filter(|p| *p.get() == 0) {
        r.error(
            port.position(),
            format!("service {name:?}: port must not be 0"),
        );
    }
}

/// Ranges of the retry, budget, limit, ejection and breaker settings.
fn check_resilience(name: &str, dst: &DestinationConfig, r: &mut Report<'_>) {
    check_retries(&dst.retries, r);
    let budget = &dst.retry_budget;
    if !(0.0..=100.0).contains(budget.ratio.get()) {
        r.error(
            budget.ratio.position(),
            "retry_budget.ratio must be from 0 to 100",
        );
    }
    if !(1..=60).contains(&budget.window.as_secs()) {
        r.error(
            budget.window.position(),
            "retry_budget.window must be from 1s to 60s",
        );
    }
    let limits = &dst.limits;
    if limits.max_connections == 0 || limits.max_pending == 0 || limits.max_requests == 0 {
        r.error(
            Position::default(),
            format!("service {name:?}: limits must be at least 1"),
        );
    }
    let outlier = &dst.outlier_detection;
    if *outlier.consecutive_failures == 0 {
        r.error(
            outlier.consecutive_failures.position(),
            "outlier_detection.consecutive_failures must be at least 1",
        );
    }
    if *outlier.max_ejected_percent > 100 {
        r.error(
            outlier.max_ejected_percent.position(),
            "outlier_detection.max_ejected_percent is a percentage, 0 to 100",
        );
    }
    if let Some(breaker) = &dst.breaker {
        if *breaker.error_threshold_percent > 100 {
            r.error(
                breaker.error_threshold_percent.position(),
                "breaker.error_threshold_percent is a percentage, 0 to 100",
            );
        }
        let buckets = *breaker.buckets;
        if buckets == 0 || buckets > 1000 {
            r.error(
                breaker.buckets.position(),
                "breaker.buckets must be from 1 to 1000",
            );
        } else if breaker.window.0 / buckets < std::time::Duration::from_millis(10) {
            r.error(
                breaker.window.position(),
                "breaker.window must allow 10ms per bucket",
            );
        }
    }
}

pub(super) fn check_retries(retries: &RetryConfig, r: &mut Report<'_>) {
    if !(1..=10).contains(retries.attempts.get()) {
        r.error(
            retries.attempts.position(),
            "retries.attempts must be from 1 to 10",
        );
    }
    if retries.backoff_base.0 > retries.backoff_max.0 {
        r.error(
            retries.attempts.position(),
            "retries.backoff_base must not be more than backoff_max",
        );
    }
    if retries.max_body.0 > 16 * 1024 * 1024 {
        r.error(
            retries.max_body.position(),
            "retries.max_body must be at most 16MiB",
        );
    }
}

/// A fallback is a static response or another service, not both.
pub(super) fn check_fallback(
    fallback: &FallbackConfig,
    services: &BTreeMap<String, Located<DestinationConfig>>,
    at: Position,
    r: &mut Report<'_>,
) {
    let is_static =
        fallback.status.is_some() || fallback.body.is_some() || !fallback.headers.is_empty();
    match &fallback.service {
        Some(service) if is_static => r.error(
            service.position(),
            "a fallback is a service or a static response (status, headers, body), not both",
        ),
        Some(service) if !services.contains_key(service.as_str()) => r.error(
            service.position(),
            format!("fallback to undefined service {:?}", service.get()),
        ),
        _ => {}
    }
    if let Some(status) = &fallback.status {
        if !(100..=599).contains(status.get()) {
            r.error(status.position(), "fallback status must be from 100 to 599");
        }
    }
    for (name, value) in &fallback.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
        {
            r.error(
                at,
                format!("fallback header {name:?} is not a valid header"),
            );
        }
    }
}

/// The identity a destination's endpoints must prove.
pub fn expected_identity(
    config: &Config,
    name: &str,
    dst: &DestinationConfig,
) -> Result<SpiffeId, String> {
    let namespace = dst.namespace.as_deref().unwrap_or(&config.namespace);
    match dst.identity.as_ref().map(|i| i.get().as_str()) {
        None => Ok(SpiffeId::for_service(&config.trust_domain, namespace, name)),
        Some(text) if text.starts_with("spiffe://") => {
            SpiffeId::parse(text).map_err(|e| e.to_string())
        }
        Some(text) => ServiceName::new(text)
            .map(|sa| SpiffeId::for_service(&config.trust_domain, namespace, sa.as_str()))
            .map_err(|e| format!("identity: {e} (give a service name or a spiffe:// id)")),
    }
}

/// Detection waits a while, and opaque ports are real ports.
pub(super) fn check_detection(outbound: &OutboundConfig, r: &mut Report<'_>) {
    let wait = outbound.detect_timeout.get().0;
    if wait.is_zero() || wait > Duration::from_secs(60) {
        r.error(
            outbound.detect_timeout.position(),
            format!(
                "outbound.detect_timeout {}: from 1ms to 60s (a captured client that sends \
                 nothing waits this long for its server)",
                outbound.detect_timeout.get()
            ),
        );
    }
    for port in &outbound.opaque_ports {
        if *port.get() == 0 {
            r.error(
                port.position(),
                "outbound.opaque_ports: a port other than 0",
            );
        }
    }
}
