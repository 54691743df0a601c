//! Checks a parsed [`Config`] beyond what its types say: names, addresses
//! that collide, routes to services that do not exist. Each problem points
//! at the place in the file it comes from. The certificate files are
//! checked by `tls`, through the loader's [`FileCheck`](super::FileCheck).

use std::net::SocketAddr;
use std::path::Path;

mod gateway;
mod outbound;
mod rate_limit;
mod route;

pub use self::outbound::expected_identity;
use super::{Config, ConfigError, Located, Position, Transport};
use crate::identity::{check_namespace, check_trust_domain};

/// Collects errors with their positions.
pub(super) struct Report<'a> {
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl Report<'_> {
    pub(super) fn error(&mut self, position: Position, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            position,
            message: message.into(),
        });
    }
}

/// Checks that need no file system. Returns every problem found.
pub(super) fn validate(config: &Config, file: &Path) -> Vec<ConfigError> {
    let mut report = Report {
        file,
        errors: Vec::new(),
    };
    let r = &mut report;
    if let Err(e) = check_namespace(&config.namespace) {
        r.error(config.namespace.position(), e.to_string());
    }
    if let Err(e) = check_trust_domain(&config.trust_domain) {
        r.error(config.trust_domain.position(), e.to_string());
    }
    if config.inbound.is_none() && config.outbound.is_none() {
        r.error(
            Position::default(),
            "neither `inbound:` nor `outbound:` is configured; a sidecar needs at least one",
        );
    }
    if config.tls.is_none() && needs_tls(config) {
        r.error(
            Position::default(),
            "`tls:` is missing; it is required with `inbound:` and for destinations \
             with transport: mtls (the default)",
        );
    }
    check_listeners(config, r);
    if let Some(inbound) = &config.inbound {
        if let Some(authz) = &inbound.authorization {
            check_authorization(authz, r);
        }
        if inbound.app_protocol == super::UpstreamProtocol::Opaque {
            r.error(
                inbound.position(),
                "inbound.app_protocol opaque: the app speaks HTTP; raw TCP ports go in \
                 inbound.opaque_ports",
            );
        }
        for port in &inbound.opaque_ports {
            if *port.get() == 0 {
                r.error(port.position(), "inbound.opaque_ports: a port other than 0");
            }
        }
    }
    if let Some(outbound) = &config.outbound {
        outbound::check_services(config, outbound, r);
        route::check_routes(
            "outbound.routes",
            &outbound.routes,
            &outbound.services,
            false,
            r,
        );
        outbound::check_detection(outbound, r);
    }
    if let Some(gateway) = &config.gateway {
        gateway::check_gateway(config, gateway, r);
    }
    check_limits(config, r);
    check_telemetry(config, r);
    rate_limit::check_rate_limits(config, r);
    if let Some(tls) = &config.tls {
        let share = *tls.expiry_warning.get();
        if !(0.0..=1.0).contains(&share) {
            r.error(
                tls.expiry_warning.position(),
                format!("tls.expiry_warning {share} must be a share of the lifetime, from 0 to 1"),
            );
        }
    }
    let level = &config.log.level;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(level.as_str()) {
        r.error(
            level.position(),
            format!("log.level {:?} is not a valid filter: {e}", level.get()),
        );
    }
    report.errors
}

fn check_authorization(authz: &super::AuthorizationConfig, r: &mut Report<'_>) {
    for rule in &authz.rules {
        if rule.from.is_empty() {
            r.error(
                rule.position(),
                "an authorization rule needs at least one caller in `from`",
            );
        }
        for caller in &rule.from {
            if let Err(e) = caller.check() {
                r.error(caller.position(), e);
            }
        }
        for path in &rule.paths {
            if let Err(e) = super::check_path_pattern(path) {
                r.error(path.position(), e);
            }
        }
        for method in &rule.methods {
            if let Err(e) = super::parse_method(method) {
                r.error(method.position(), e);
            }
        }
        if let Some(port) = rule.ports.first()
            && !(rule.paths.is_empty() && rule.methods.is_empty())
        {
            r.error(
                port.position(),
                "a rule with `ports` is for raw TCP connections: it cannot have paths or methods",
            );
        }
    }
    let mut names = std::collections::HashSet::new();
    for rule in &authz.rules {
        if let Some(name) = &rule.name {
            if !names.insert(name.as_str()) {
                r.error(
                    rule.position(),
                    format!("two authorization rules are named {name:?}"),
                );
            }
        }
    }
}

/// Things that are valid but probably not what the operator wants.
pub fn warnings(config: &Config, file: &Path) -> Vec<ConfigError> {
    let mut report = Report {
        file,
        errors: Vec::new(),
    };
    if let Some(inbound) = &config.inbound {
        let admits_all = match &inbound.authorization {
            None => true,
            Some(authz) => {
                *authz.default == super::DefaultPolicy::AllowMesh && authz.rules.is_empty()
            }
        };
        if admits_all {
            report.error(
                inbound.position(),
                "warning: inbound admits every identity of the trust domain to every path \
                 (no authorization rules, default allow-mesh); add inbound.authorization",
            );
        }
    }
    if let Some(gateway) = &config.gateway {
        let forwards = gateway
            .routes
            .iter()
            .any(|r| r.request_redirect.is_none() && r.direct_response.is_none());
        if gateway.jwt.is_none() && forwards {
            report.error(
                Position::default(),
                "warning: gateway has no `jwt`: every route is public, and the services \
                 behind it see every client as the gateway",
            );
        }
    }
    if config
        .tls
        .as_ref()
        .is_some_and(|t| *t.min_version == super::TlsVersion::Tls12)
    {
        if let Some(tls) = &config.tls {
            report.error(
                tls.min_version.position(),
                "warning: TLS 1.2 is enabled; every Pilotfish peer speaks TLS 1.3",
            );
        }
    }
    report.errors
}

/// Whether any part of the config speaks mTLS.
fn needs_tls(config: &Config) -> bool {
    config.inbound.is_some()
        || config
            .outbound
            .as_ref()
            .is_some_and(|o| o.services.values().any(|d| *d.transport == Transport::Mtls))
}

/// Two listeners on the same port collide when their IPs are equal or one
/// of them is the wildcard address. Port 0 (any free port) never collides.
fn check_listeners(config: &Config, r: &mut Report<'_>) {
    let mut listeners: Vec<(&str, &Located<SocketAddr>)> =
        vec![("admin.listen", &config.admin.listen)];
    if let Some(inbound) = &config.inbound {
        listeners.push(("inbound.listen", &inbound.listen));
    }
    if let Some(outbound) = &config.outbound {
        listeners.push(("outbound.listen", &outbound.listen));
        for dst in outbound.services.values() {
            if let Some(listen) = &dst.listen {
                listeners.push(("a destination's listen", listen));
            }
        }
    }
    if let Some(gateway) = &config.gateway {
        if let Some(listen) = &gateway.listen {
            listeners.push(("gateway.listen", listen));
        }
        if let Some(tls) = &gateway.tls {
            listeners.push(("gateway.tls.listen", &tls.listen));
        }
    }
    for (i, (name, addr)) in listeners.iter().enumerate() {
        for (other_name, other) in &listeners[..i] {
            if collide(addr, other) {
                r.error(
                    addr.position(),
                    format!(
                        "duplicate listener address {}: {name} collides with {other_name} ({})",
                        addr.get(),
                        other.get()
                    ),
                );
            }
        }
    }
    if let Some(inbound) = &config.inbound {
        if inbound.app.port() == 0 {
            r.error(
                inbound.app.position(),
                "inbound.app needs a port other than 0",
            );
        }
        for (name, addr) in &listeners {
            if collide(&inbound.app, addr) {
                r.error(
                    inbound.app.position(),
                    format!(
                        "inbound.app {} is this sidecar's own {name}; requests would loop",
                        inbound.app.get()
                    ),
                );
            }
        }
    }
}

fn collide(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn check_telemetry(config: &Config, r: &mut Report<'_>) {
    let tracing = &config.tracing;
    let formats = &tracing.propagation;
    if formats.is_empty() {
        r.error(
            formats.position(),
            "tracing.propagation is empty; list at least one of w3c, b3, b3multi",
        );
    }
    for (i, format) in formats.iter().enumerate() {
        if formats[..i].contains(format) {
            r.error(
                formats.position(),
                format!("tracing.propagation lists {} twice", format.as_str()),
            );
        }
    }
    let ratio = *tracing.sample_ratio.get();
    if !(0.0..=1.0).contains(&ratio) {
        r.error(
            tracing.sample_ratio.position(),
            format!("tracing.sample_ratio {ratio} must be from 0 (none) to 1 (every trace)"),
        );
    }
    if let Some(otlp) = &tracing.otlp {
        if let Err(e) = check_collector_url(&otlp.endpoint) {
            r.error(
                otlp.endpoint.position(),
                format!("tracing.otlp.endpoint {:?}: {e}", otlp.endpoint.get()),
            );
        }
        if *otlp.max_batch.get() == 0 {
            r.error(
                otlp.max_batch.position(),
                "tracing.otlp.max_batch must be at least 1",
            );
        }
        if otlp.max_queue.get() < otlp.max_batch.get() {
            r.error(
                otlp.max_queue.position(),
                format!(
                    "tracing.otlp.max_queue {} is smaller than max_batch {}",
                    otlp.max_queue.get(),
                    otlp.max_batch.get()
                ),
            );
        }
    }
    let header = &config.request_ids.correlation_header;
    if let Err(e) = super::parse_correlation_header(header) {
        r.error(
            header.position(),
            format!("request_ids.correlation_header: {e}"),
        );
    }
}

/// An OTLP endpoint the exporters can reach: plain `http://HOST:PORT`.
fn check_collector_url(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("not a URL ({e}); write it like http://127.0.0.1:4317"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "TLS to the collector is not supported; run the collector as a \
                        local agent and give its http:// address"
                    .to_owned(),
            );
        }
        _ => return Err("must start with http://, like http://127.0.0.1:4317".to_owned()),
    }
    let authority = uri
        .authority()
        .ok_or("has no host; write it like http://127.0.0.1:4317")?;
    if authority.port_u16().is_none() {
        return Err("has no port; collectors listen on 4317 (gRPC) or 4318 (HTTP)".to_owned());
    }
    Ok(())
}

fn check_limits(config: &Config, r: &mut Report<'_>) {
    let bytes = &config.http.max_header_bytes;
    if !(8 * 1024..=16 * 1024 * 1024).contains(&bytes.0) {
        r.error(
            bytes.position(),
            format!(
                "http.max_header_bytes {} must be between 8KiB and 16MiB",
                bytes.get()
            ),
        );
    }
    let headers = &config.http.max_headers;
    if !(1..=10_000).contains(headers.get()) {
        r.error(
            headers.position(),
            "http.max_headers must be between 1 and 10000",
        );
    }
    let threads = &config.runtime.worker_threads;
    if !(1..=64).contains(threads.get()) {
        r.error(
            threads.position(),
            "runtime.worker_threads must be between 1 and 64",
        );
    }
    let mut caps = Vec::new();
    if let Some(inbound) = &config.inbound {
        caps.push(("inbound.max_connections", &inbound.max_connections));
        caps.push(("inbound.max_app_connections", &inbound.max_app_connections));
    }
    if let Some(outbound) = &config.outbound {
        caps.push(("outbound.max_connections", &outbound.max_connections));
    }
    for (name, cap) in caps {
        if !(1..=1_000_000).contains(cap.get()) {
            r.error(
                cap.position(),
                format!("{name} must be between 1 and 1000000"),
            );
        }
    }
    let http = &config.http;
    let zero = [
        ("http.header_read_timeout", http.header_read_timeout),
        ("http.idle_timeout", http.idle_timeout),
        ("http.body_idle_timeout", http.body_idle_timeout),
        ("http.h2_keepalive", http.h2_keepalive),
    ];
    for (name, value) in zero {
        if value.0.is_zero() {
            r.error(Position::default(), format!("{name} must be above zero"));
        }
    }
}
