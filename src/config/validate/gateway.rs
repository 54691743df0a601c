//! Checks of `gateway:`: its listeners, token settings and routes.

use super::Report;
use crate::config::{Config, GatewayConfig, JwtConfig, JwtKeySource, Position, RouteAuth};

/// Identity fields the gateway sets from a verified token.
const IDENTITY_HEADERS: [&str; 2] = ["x-user-id", "x-user-roles"];

pub(super) fn check_gateway(config: &Config, gateway: &GatewayConfig, r: &mut Report<'_>) {
    if gateway.listen.is_none() && gateway.tls.is_none() {
        r.error(
            Position::default(),
            "gateway: give `listen` (plain HTTP), `tls` (HTTPS), or both",
        );
    }
    if *gateway.max_connections.get() == 0 {
        r.error(
            gateway.max_connections.position(),
            "gateway.max_connections must be more than 0",
        );
    }
    if *gateway.trusted_hops.get() > 16 {
        r.error(
            gateway.trusted_hops.position(),
            "gateway.trusted_hops: at most 16 proxies in front of the gateway",
        );
    }
    let Some(outbound) = &config.outbound else {
        r.error(
            Position::default(),
            "gateway: routes send to `outbound.services`; add `outbound:` with the services",
        );
        return;
    };
    super::route::check_routes(
        "gateway.routes",
        &gateway.routes,
        &outbound.services,
        true,
        r,
    );
    for route in &gateway.routes {
        let Some(auth) = &route.auth else { continue };
        if let RouteAuth::Roles(names) | RouteAuth::Scopes(names) = auth.get() {
            if names.is_empty() || names.iter().any(String::is_empty) {
                r.error(
                    auth.position(),
                    format!(
                        "route {:?}: name at least one role or scope, none empty \
                         (`auth: required` takes any valid token)",
                        route.label()
                    ),
                );
            }
        }
        if gateway.jwt.is_none() && *auth.get() != RouteAuth::Public {
            r.error(
                auth.position(),
                format!(
                    "route {:?}: auth needs tokens checked: add `gateway.jwt`",
                    route.label()
                ),
            );
        }
    }
    if let Some(jwt) = &gateway.jwt {
        check_jwt(jwt, r);
    }
}

fn check_jwt(jwt: &JwtConfig, r: &mut Report<'_>) {
    if jwt.keys.is_empty() {
        r.error(
            Position::default(),
            "gateway.jwt.keys: give at least one key source (pem, secret_file, jwks_file, jwks_url)",
        );
    }
    for key in &jwt.keys {
        if let JwtKeySource::JwksUrl(url) = key.get() {
            let valid = url
                .parse::<http::Uri>()
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
                .is_some_and(|u| u.host().is_some());
            if !valid {
                r.error(
                    key.position(),
                    format!("jwks_url {url:?}: give an http:// or https:// URL with a host"),
                );
            }
        }
    }
    let refresh = jwt.jwks_refresh.get().0;
    if refresh < std::time::Duration::from_secs(1) {
        r.error(
            jwt.jwks_refresh.position(),
            "gateway.jwt.jwks_refresh must be 1s or more",
        );
    }
    if jwt.leeway.0 > std::time::Duration::from_secs(3600) {
        r.error(
            Position::default(),
            "gateway.jwt.leeway: at most 1h of clock skew",
        );
    }
    for (what, claim) in [
        ("roles_claim", &jwt.roles_claim),
        ("scopes_claim", &jwt.scopes_claim),
    ] {
        if claim.is_empty() {
            r.error(
                Position::default(),
                format!("gateway.jwt.{what} must not be empty"),
            );
        }
    }
    if jwt.query_param.as_ref().is_some_and(|q| q.is_empty()) {
        r.error(
            Position::default(),
            "gateway.jwt.query_param must not be empty",
        );
    }
    for (claim, header) in &jwt.claim_headers {
        let lower = header.to_ascii_lowercase();
        let problem = if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            Some("is not a valid header name")
        } else if IDENTITY_HEADERS.contains(&lower.as_str()) {
            Some("is set from `sub` and the roles claim already")
        } else if lower.starts_with("pilotfish-")
            || [
                "authorization",
                "host",
                "cookie",
                "connection",
                "transfer-encoding",
                "te",
                "upgrade",
            ]
            .contains(&lower.as_str())
        {
            Some("is a field the proxy or HTTP itself owns")
        } else {
            None
        };
        if let Some(problem) = problem {
            r.error(
                Position::default(),
                format!("gateway.jwt.claim_headers: {claim:?} -> {header:?}: {header:?} {problem}"),
            );
        }
    }
}
