//! The config loader: YAML text -> `Config`, validated, as `pilotfish
//! check` and `run` read a file (`config::parse_str`: the same parser and
//! rules, without reading the certificate files it names).
//!
//! A config that passes must also build: the pure parts of the state are
//! made from it as `App::build` makes them (routes, authorization policy,
//! request ids, tracer, rate limits, header limits), and it must show on
//! the admin port (`/config`: YAML, secrets hidden) as YAML that reads
//! back as the same config.
//!
//! Input: YAML text.

use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::HeaderMap;
use http::header::HeaderValue;
use pilotfish::authority::parse_dns_target;
use pilotfish::config::{
    Config, ConfigErrors, LimitDirection, expected_identity, parse_str, warnings,
};
use pilotfish::http::headers::PROXY_ADDED_HEADERS;
use pilotfish::http::request_id::RequestIdHeaders;
use pilotfish::http::server::HeaderLimits;
use pilotfish::identity::SpiffeId;
use pilotfish::inbound::Policy;
use pilotfish::ratelimit::{RateLimits, Subject};
use pilotfish::routing::RouteTable;
use pilotfish::routing::filters::HeaderOps;
use pilotfish::routing::split::Split;
use pilotfish::trace::Tracer;

use super::input::text;

const FILE: &str = "fuzz.yaml";

/// Checks one input.
pub fn run(data: &[u8]) {
    // The loader reads the file as UTF-8 and stops otherwise.
    let Some(text) = text(data) else {
        return;
    };
    match parse_str(text, Path::new(FILE)) {
        Ok(config) => check_valid(&config),
        Err(errors) => check_errors(text, &errors),
    }
}

/// Errors say `FILE:LINE:COLUMN: problem`, one line each, at a place that
/// is in the file.
fn check_errors(text: &str, errors: &ConfigErrors) {
    assert!(!errors.0.is_empty(), "an error without errors");
    // YAML's line breaks: CRLF, CR or LF.
    let lines = text.replace("\r\n", "\n").split(['\r', '\n']).count() as u32;
    for err in &errors.0 {
        assert_eq!(err.file, Path::new(FILE));
        assert!(
            err.position.line <= lines + 1,
            "line {} of {lines}: {err}",
            err.position.line
        );
        assert!(
            !err.message.contains('\n'),
            "not one line: {:?}",
            err.message
        );
        assert!(err.to_string().starts_with(FILE));
    }
}

fn check_valid(config: &Config) {
    let path = Path::new(FILE);
    for warning in warnings(config, path) {
        assert!(warning.message.starts_with("warning:"), "{warning}");
    }
    check_shown(config);
    check_builds(config);
}

/// `/config` shows the config as YAML; without redaction that YAML is the
/// same config again.
fn check_shown(config: &Config) {
    let yaml = serde_saphyr::to_string(config)
        .unwrap_or_else(|e| panic!("the config cannot be shown: {e}"));
    match parse_str(&yaml, Path::new(FILE)) {
        Ok(again) => assert!(
            again == *config,
            "shown as\n{yaml}\nit reads back differently:\n{again:#?}\nwas\n{config:#?}"
        ),
        Err(errors) => panic!("shown as\n{yaml}\nit does not read back: {errors}"),
    }
    let redacted = config.redacted();
    let shown = serde_saphyr::to_string(&redacted)
        .unwrap_or_else(|e| panic!("the redacted config cannot be shown: {e}"));
    let _: Config = serde_saphyr::from_str(&shown)
        .unwrap_or_else(|e| panic!("shown as\n{shown}\nit is not a config: {e}"));
    for (limit, shown) in config.rate_limits.iter().zip(&redacted.rate_limits) {
        for over in &shown.overrides {
            assert!(over.value.as_ref().is_none_or(|v| v == "<redacted>"));
        }
        let (Some(global), Some(shown)) = (&limit.global, &shown.global) else {
            continue;
        };
        let password = redis::parse_redis_url(&global.redis)
            .and_then(|url| url.password().map(str::to_owned))
            .filter(|p| !p.is_empty());
        if let Some(password) = password {
            let leaked = redis::parse_redis_url(&shown.redis)
                .and_then(|url| url.password().map(str::to_owned));
            assert_ne!(
                leaked.as_deref(),
                Some(password.as_str()),
                "{:?} shown as {:?}",
                global.redis.as_str(),
                shown.redis.as_str()
            );
        }
    }
}

/// A validated route's filters and split compile.
fn check_routes(routes: &[pilotfish::config::RouteConfig]) {
    for route in routes {
        for modifier in [
            &route.request_header_modifier,
            &route.response_header_modifier,
        ]
        .into_iter()
        .flatten()
        {
            HeaderOps::compile(modifier)
                .unwrap_or_else(|e| panic!("a validated header modifier does not compile: {e}"));
        }
        let weights: Vec<(&str, u32)> = route
            .backends
            .iter()
            .map(|b| (b.service.as_str(), *b.weight.get()))
            .collect();
        if !weights.is_empty() {
            let split = Split::new(&weights, route.sticky.as_ref().map(|s| s.get()));
            let pick = split.pick(&HeaderMap::new());
            assert!(pick.index < weights.len());
            assert!(weights[pick.index].1 > 0, "picked a backend of weight 0");
        }
    }
}

/// What `App::build` makes from a config, without sockets or files.
fn check_builds(config: &Config) {
    let identity = config.identity();
    assert_eq!(SpiffeId::parse(identity.as_str()).as_ref(), Ok(&identity));
    assert!(HeaderValue::from_str(identity.as_str()).is_ok());

    if let Some(inbound) = &config.inbound {
        if let Some(authz) = &inbound.authorization {
            Policy::new(Some(authz), &config.trust_domain, &config.namespace)
                .unwrap_or_else(|e| panic!("a validated policy does not compile: {e}"));
        }
    }
    if let Some(outbound) = &config.outbound {
        let services: Vec<(&str, &str)> = outbound
            .services
            .iter()
            .map(|(name, dst)| {
                let ns = dst.namespace.as_deref().unwrap_or(&config.namespace);
                (name.as_str(), ns)
            })
            .collect();
        let _ = RouteTable::build(&outbound.routes, &services, true);
        check_routes(&outbound.routes);
        if let Some(gateway) = &config.gateway {
            let _ = RouteTable::build(&gateway.routes, &services, false);
            check_routes(&gateway.routes);
        }
        for (name, dst) in &outbound.services {
            expected_identity(config, name, dst)
                .unwrap_or_else(|e| panic!("{name}: no identity: {e}"));
            if let Some(dns) = &dst.dns {
                parse_dns_target(dns).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }
    RequestIdHeaders::new(&config.request_ids.correlation_header)
        .unwrap_or_else(|e| panic!("request ids: {e}"));
    let _ = Tracer::new(&config.tracing, None);
    let limits = HeaderLimits::from_config(&config.http).with_headroom(PROXY_ADDED_HEADERS);
    let _ = (limits.h1_max_headers(), limits.h2_list_size());

    // A global limit starts a Redis client on the runtime: not here.
    if config.rate_limits.iter().all(|l| l.global.is_none()) {
        let limits = RateLimits::build(config, super::metrics(), None)
            .unwrap_or_else(|e| panic!("validated rate limits do not build: {e}"));
        // Take from every limit until refused, as a burst of requests would.
        let headers = HeaderMap::new();
        let caller = SpiffeId::for_service(&config.trust_domain, "default", "caller");
        let claims = serde_json::json!({ "sub": "alice", "tier": 3 });
        for limit in &config.rate_limits {
            let subject = Subject {
                caller: Some(&caller),
                client: Some([10, 0, 0, 1].into()),
                headers: &headers,
                service: limit.service.as_ref().map(|s| s.as_str()),
                route: limit.route.as_ref().map(|r| r.as_str()),
                claims: Some(&claims),
            };
            let burst = limit.burst.as_ref().map_or(2, |b| *b.get()).min(64) + 1;
            for _ in 0..burst {
                let direction: LimitDirection = *limit.direction;
                let mut check = pin!(limits.check(direction, &subject));
                match check.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(_) => {}
                    Poll::Pending => panic!("a local limit waited"),
                }
            }
        }
    }
}
