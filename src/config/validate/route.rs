//! Checks of routes, for `outbound.routes` and `gateway.routes`: what a
//! route matches, where it sends, and its filters.

use std::collections::{BTreeMap, HashMap, HashSet};

use http::{HeaderName, HeaderValue};

use super::Report;
use super::outbound::{check_fallback, check_retries};
use crate::config::{
    CorsConfig, DestinationConfig, HeaderModifier, Located, PathMatch, PathRewrite, Position,
    Redirect, RouteConfig, StickyConfig, parse_method,
};

/// Fields a header modifier may not touch: the connection's own, and the
/// host (`url_rewrite.hostname` sets it).
const UNTOUCHABLE: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Checks `routes` (of `section`) against `services`. `gateway`: the
/// gateway's routes, which may have `auth` and `cors`.
pub(super) fn check_routes(
    section: &str,
    routes: &[RouteConfig],
    services: &BTreeMap<String, Located<DestinationConfig>>,
    gateway: bool,
    r: &mut Report<'_>,
) {
    let mut seen: HashMap<(String, String), Position> = HashMap::new();
    let mut names: HashMap<&str, Position> = HashMap::new();
    for route in routes {
        let at = route.host.position();
        let label = route.label();
        if let Some(name) = &route.name {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
            if !valid {
                r.error(
                    name.position(),
                    format!(
                        "route name {:?}: use 1 to 64 letters, digits, '.', '_', '/' or '-'",
                        name.get()
                    ),
                );
            }
            if let Some(first) = names.insert(name.as_str(), name.position()) {
                r.error(
                    name.position(),
                    format!(
                        "route name {:?} is used twice (first at line {})",
                        name.get(),
                        first.line
                    ),
                );
            }
        }
        for service in route.services() {
            if !services.contains_key(service.as_str()) {
                let known: Vec<&str> = services.keys().map(String::as_str).collect();
                r.error(
                    service.position(),
                    format!(
                        "route to undefined service {:?} (defined: {})",
                        service.get(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
        if let Err(e) = crate::authority::parse_route_host(&route.host) {
            r.error(at, e);
        }
        if !route.path_prefix.starts_with('/') {
            r.error(
                at,
                format!("path_prefix {:?} must start with '/'", route.path_prefix),
            );
        }
        if let Some(retries) = &route.retries {
            check_retries(retries, r);
        }
        if let Some(fallback) = &route.fallback {
            check_fallback(fallback, services, at, r);
        }
        check_action(&label, route, r);
        check_matches(&label, route, r);
        check_backends(&label, route, r);
        check_filters(&label, route, r);
        check_gateway_only(section, &label, route, gateway, r);
        if let Some(max) = &route.max_request_body {
            if max.get().0 == 0 {
                r.error(
                    max.position(),
                    format!("route {label:?}: max_request_body must be more than 0"),
                );
            }
        }
        // The same conditions twice: the second route is never taken.
        let host = route.host.to_ascii_lowercase();
        if route.matches.is_empty() {
            let key = (host, route.path_prefix.clone());
            if let Some(first) = seen.insert(key, at) {
                r.error(
                    at,
                    format!(
                        "duplicate route for host {:?} and path_prefix {:?} (first at line {})",
                        route.host.get(),
                        route.path_prefix,
                        first.line
                    ),
                );
            }
        } else {
            for m in &route.matches {
                // Methods and field names in any case are the same.
                let mut normal = m.get().clone();
                normal.method = normal.method.map(|m| m.to_ascii_uppercase());
                normal.headers = normal
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
                let key = (host.clone(), format!("{normal:?}"));
                if let Some(first) = seen.insert(key, m.position()) {
                    r.error(
                        m.position(),
                        format!(
                            "route {label:?}: this match for host {:?} is the same as one at \
                             line {} (the later one is never taken)",
                            route.host.get(),
                            first.line
                        ),
                    );
                }
            }
        }
    }
}

/// Exactly one of `service`, `backends`, `request_redirect`,
/// `direct_response`.
fn check_action(label: &str, route: &RouteConfig, r: &mut Report<'_>) {
    let given: Vec<(&str, Position)> = [
        ("service", route.service.as_ref().map(|s| s.position())),
        ("backends", route.backends.first().map(|b| b.position())),
        (
            "request_redirect",
            route.request_redirect.as_ref().map(|x| x.position()),
        ),
        (
            "direct_response",
            route.direct_response.as_ref().map(|x| x.position()),
        ),
    ]
    .into_iter()
    .filter_map(|(field, at)| Some((field, at?)))
    .collect();
    match given.as_slice() {
        [] => r.error(
            route.host.position(),
            format!(
                "route {label:?}: give one of service, backends, request_redirect or \
                 direct_response"
            ),
        ),
        [_] => {}
        [_, (_, at), ..] => {
            let fields: Vec<&str> = given.iter().map(|(f, _)| *f).collect();
            r.error(
                *at,
                format!(
                    "route {label:?}: give only one of service, backends, request_redirect \
                     or direct_response (found {})",
                    fields.join(", ")
                ),
            );
        }
    }
    if let Some(redirect) = &route.request_redirect {
        check_redirect(label, redirect, route, r);
    }
    if let Some(direct) = &route.direct_response {
        if !(200..=599).contains(&direct.status) {
            r.error(
                direct.position(),
                format!("route {label:?}: direct_response.status must be from 200 to 599"),
            );
        }
        if HeaderValue::from_str(&direct.content_type).is_err() {
            r.error(
                direct.position(),
                format!(
                    "route {label:?}: direct_response.content_type {:?} is not a valid field value",
                    direct.content_type
                ),
            );
        }
    }
}

fn check_redirect(
    label: &str,
    redirect: &Located<Redirect>,
    route: &RouteConfig,
    r: &mut Report<'_>,
) {
    let at = redirect.position();
    if ![301, 302, 303, 307, 308].contains(&redirect.status_code) {
        r.error(
            at,
            format!(
                "route {label:?}: request_redirect.status_code {} must be 301, 302, 303, 307 or 308",
                redirect.status_code
            ),
        );
    }
    if let Some(scheme) = &redirect.scheme {
        if scheme != "http" && scheme != "https" {
            r.error(
                at,
                format!(
                    "route {label:?}: request_redirect.scheme {scheme:?} must be http or https"
                ),
            );
        }
    }
    if let Some(host) = &redirect.hostname {
        if !is_hostname(host) {
            r.error(
                at,
                format!("route {label:?}: request_redirect.hostname {host:?} is not a host name"),
            );
        }
    }
    if redirect.port == Some(0) {
        r.error(
            at,
            format!("route {label:?}: request_redirect.port must not be 0"),
        );
    }
    if let Some(path) = &redirect.path {
        check_path_rewrite(label, "request_redirect.path", path, route, at, r);
    }
}

/// `matches` (or `path_prefix`): paths, methods, fields, parameters.
fn check_matches(label: &str, route: &RouteConfig, r: &mut Report<'_>) {
    if let Some(first) = route.matches.first() {
        if route.path_prefix != "/" {
            r.error(
                first.position(),
                format!(
                    "route {label:?}: give `matches` or `path_prefix`, not both (put the \
                     prefix in a match: path: {{ prefix: {} }})",
                    route.path_prefix
                ),
            );
        }
    }
    for m in &route.matches {
        let at = m.position();
        if let Some(path) = &m.path {
            if let Err(e) = path.check() {
                r.error(at, format!("route {label:?}: matches.path: {e}"));
            }
        }
        if let Some(method) = &m.method {
            if let Err(e) = parse_method(method) {
                r.error(at, format!("route {label:?}: matches.method: {e}"));
            }
        }
        for (name, value) in &m.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                r.error(
                    at,
                    format!("route {label:?}: matches.headers: {name:?} is not a valid field name"),
                );
            }
            if HeaderValue::from_str(value).is_err() {
                r.error(
                    at,
                    format!(
                        "route {label:?}: matches.headers: {name:?}: {value:?} is not a valid \
                         field value"
                    ),
                );
            }
        }
        if m.query_params.keys().any(String::is_empty) {
            r.error(
                at,
                format!("route {label:?}: matches.query_params: a parameter name is empty"),
            );
        }
    }
}

/// Weighted backends and stickiness.
fn check_backends(label: &str, route: &RouteConfig, r: &mut Report<'_>) {
    let mut seen = HashSet::new();
    for backend in &route.backends {
        if !seen.insert(backend.service.as_str()) {
            r.error(
                backend.service.position(),
                format!(
                    "route {label:?}: backends: service {:?} is listed twice",
                    backend.service.get()
                ),
            );
        }
    }
    if let Some(first) = route.backends.first() {
        if route.backends.iter().all(|b| *b.weight.get() == 0) {
            r.error(
                first.position(),
                format!("route {label:?}: backends: the weights are all 0 (give one more than 0)"),
            );
        }
    }
    let Some(sticky) = &route.sticky else {
        return;
    };
    if route.backends.len() < 2 {
        r.error(
            sticky.position(),
            format!("route {label:?}: sticky is for routes with 2 or more backends"),
        );
    }
    match sticky.get() {
        StickyConfig::Header(name) if HeaderName::from_bytes(name.as_bytes()).is_err() => {
            r.error(
                sticky.position(),
                format!("route {label:?}: sticky.header {name:?} is not a valid field name"),
            );
        }
        StickyConfig::Cookie(name) if !is_token(name) => r.error(
            sticky.position(),
            format!(
                "route {label:?}: sticky.cookie {name:?} is not a valid cookie name (letters, \
                 digits and !#$%&'*+-.^_`|~)"
            ),
        ),
        _ => {}
    }
}

/// Header modifiers and `url_rewrite`.
fn check_filters(label: &str, route: &RouteConfig, r: &mut Report<'_>) {
    let at = route.host.position();
    for (field, modifier) in [
        ("request_header_modifier", &route.request_header_modifier),
        ("response_header_modifier", &route.response_header_modifier),
    ] {
        if let Some(modifier) = modifier {
            check_modifier(label, field, modifier, at, r);
        }
    }
    let Some(rewrite) = &route.url_rewrite else {
        return;
    };
    if route.request_redirect.is_some() || route.direct_response.is_some() {
        r.error(
            rewrite.position(),
            format!(
                "route {label:?}: url_rewrite is for routes that forward (request_redirect has \
                 its own path and hostname)"
            ),
        );
    }
    if let Some(host) = &rewrite.hostname {
        if !is_hostname(host) {
            r.error(
                rewrite.position(),
                format!("route {label:?}: url_rewrite.hostname {host:?} is not a host name"),
            );
        }
    }
    if let Some(path) = &rewrite.path {
        check_path_rewrite(
            label,
            "url_rewrite.path",
            path,
            route,
            rewrite.position(),
            r,
        );
    }
}

fn check_path_rewrite(
    label: &str,
    field: &str,
    path: &PathRewrite,
    route: &RouteConfig,
    at: Position,
    r: &mut Report<'_>,
) {
    let (PathRewrite::ReplacePrefixMatch(text) | PathRewrite::ReplaceFullPath(text)) = path;
    if !text.starts_with('/') {
        r.error(
            at,
            format!("route {label:?}: {field}: {text:?} must start with '/'"),
        );
    }
    if http::uri::PathAndQuery::try_from(text.as_str()).is_err() || text.contains('?') {
        r.error(
            at,
            format!("route {label:?}: {field}: {text:?} is not a valid path"),
        );
    }
    let by_prefix = route
        .matches
        .iter()
        .all(|m| m.path.as_ref().is_none_or(PathMatch::is_prefix));
    if matches!(path, PathRewrite::ReplacePrefixMatch(_)) && !by_prefix {
        r.error(
            at,
            format!(
                "route {label:?}: {field}: replace_prefix_match needs a route that matches by \
                 prefix (path_prefix, or `prefix` in every match); use replace_full_path"
            ),
        );
    }
}

fn check_modifier(
    label: &str,
    field: &str,
    modifier: &HeaderModifier,
    at: Position,
    r: &mut Report<'_>,
) {
    let names = modifier
        .set
        .keys()
        .chain(modifier.add.keys())
        .chain(modifier.remove.iter());
    for name in names {
        match HeaderName::from_bytes(name.as_bytes()) {
            Err(_) => r.error(
                at,
                format!("route {label:?}: {field}: {name:?} is not a valid field name"),
            ),
            Ok(parsed) if UNTOUCHABLE.contains(&parsed.as_str()) => r.error(
                at,
                format!(
                    "route {label:?}: {field}: {name:?} belongs to the connection or the proxy \
                     and may not be changed"
                ),
            ),
            Ok(_) => {}
        }
    }
    for (name, value) in modifier.set.iter().chain(modifier.add.iter()) {
        if HeaderValue::from_str(value).is_err() {
            r.error(
                at,
                format!("route {label:?}: {field}: {name:?}: {value:?} is not a valid field value"),
            );
        }
    }
}

/// `auth` and `cors` are the gateway's.
fn check_gateway_only(
    section: &str,
    label: &str,
    route: &RouteConfig,
    gateway: bool,
    r: &mut Report<'_>,
) {
    if !gateway {
        if let Some(auth) = &route.auth {
            r.error(
                auth.position(),
                format!("{section}: route {label:?}: auth is for gateway routes"),
            );
        }
        if let Some(cors) = &route.cors {
            r.error(
                cors.position(),
                format!("{section}: route {label:?}: cors is for gateway routes"),
            );
        }
        return;
    }
    if let Some(cors) = &route.cors {
        check_cors(label, cors, r);
    }
}

fn check_cors(label: &str, cors: &Located<CorsConfig>, r: &mut Report<'_>) {
    let at = cors.position();
    if cors.allow_origins.is_empty() {
        r.error(
            at,
            format!("route {label:?}: cors.allow_origins is empty (give origins, or \"*\")"),
        );
    }
    for origin in &cors.allow_origins {
        if origin == "*" {
            if cors.allow_credentials {
                r.error(
                    at,
                    format!(
                        "route {label:?}: cors: \"*\" may not be used with allow_credentials \
                         (browsers refuse it); list the origins"
                    ),
                );
            }
        } else if !is_origin(origin) {
            r.error(
                at,
                format!(
                    "route {label:?}: cors.allow_origins: {origin:?} is not an origin \
                     (scheme://host[:port], no path)"
                ),
            );
        }
    }
    for method in &cors.allow_methods {
        if let Err(e) = parse_method(method) {
            r.error(at, format!("route {label:?}: cors.allow_methods: {e}"));
        }
    }
    for (field, names) in [
        ("allow_headers", &cors.allow_headers),
        ("expose_headers", &cors.expose_headers),
    ] {
        for name in names {
            if name != "*" && HeaderName::from_bytes(name.as_bytes()).is_err() {
                r.error(
                    at,
                    format!("route {label:?}: cors.{field}: {name:?} is not a valid field name"),
                );
            }
        }
    }
}

/// `scheme://host[:port]`, as browsers send in `Origin`.
fn is_origin(text: &str) -> bool {
    let Some((scheme, authority)) = text.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    scheme_ok
        && !authority.contains(['/', '?', '#', '@'])
        && crate::authority::split(authority).is_some()
}

/// A host name (or IP literal) without port, path or user.
fn is_hostname(text: &str) -> bool {
    !text.is_empty()
        && !text.contains(['/', '?', '#', '@', ' ', ':'])
        && http::uri::Authority::try_from(text).is_ok()
}

/// An RFC 9110 token (a cookie name).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse_str;

    /// The errors of a config whose `outbound.routes` are `routes` (YAML
    /// flow, one route per line), as `LINE: message`.
    fn errors(routes: &str) -> Vec<String> {
        let yaml = format!(
            "service: orders
outbound:
  listen: 127.0.0.1:15001
  services:
    users: {{ endpoints: [127.0.0.1:1], transport: plaintext }}
    billing: {{ endpoints: [127.0.0.1:2], transport: plaintext }}
  routes:
{routes}"
        );
        match parse_str(&yaml, Path::new("t.yaml")) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .0
                .iter()
                .map(|e| format!("{}: {}", e.position.line, e.message))
                .collect(),
        }
    }

    /// Asserts one error, on `line`, containing `text`.
    fn refused(routes: &str, line: u32, text: &str) {
        let errors = errors(routes);
        assert_eq!(errors.len(), 1, "{routes}: {errors:?}");
        assert!(
            errors[0].starts_with(&format!("{line}: ")) && errors[0].contains(text),
            "{routes}: {errors:?}, wanted line {line}: {text}"
        );
    }

    #[test]
    fn valid_routes_pass() {
        let ok = "    - { host: a, service: users }
    - host: a
      matches:
        - { path: { prefix: /u }, method: get, headers: { X-A: b }, query_params: { q: '1' } }
        - path: { prefix: /api }
      backends: [{ service: users, weight: 9 }, { service: billing }]
      sticky: { cookie: pf }
      url_rewrite: { hostname: b.internal, path: { replace_prefix_match: / } }
      request_header_modifier: { set: { x-a: b }, add: { x-b: c }, remove: [x-c] }
      max_request_body: 1KiB
    - { host: a, service: users, matches: [{ path: { pattern: /u/*/x/** } }, { path: { exact: / } }] }
    - { host: b, request_redirect: { scheme: https, port: 8443, status_code: 301 } }
    - { host: c, direct_response: { status: 503, body: down } }
";
        assert_eq!(errors(ok), Vec::<String>::new());
    }

    #[test]
    fn one_destination_exactly() {
        refused("    - { host: a }\n", 8, "give one of service, backends");
        refused(
            "    - { host: a, service: users, direct_response: { status: 200 } }\n",
            8,
            "give only one of service, backends, request_redirect or direct_response (found \
             service, direct_response)",
        );
        refused(
            "    - { host: a, service: nope }\n",
            8,
            "route to undefined service \"nope\" (defined: billing, users)",
        );
    }

    #[test]
    fn matches() {
        refused(
            "    - host: a\n      path_prefix: /x\n      service: users\n      matches: [{ method: GET }]\n",
            11,
            "give `matches` or `path_prefix`, not both",
        );
        refused(
            "    - { host: a, service: users, matches: [{ path: { exact: x } }] }\n",
            8,
            "matches.path: path \"x\" must start with '/'",
        );
        refused(
            "    - { host: a, service: users, matches: [{ path: { pattern: /a/**/b } }] }\n",
            8,
            "segment \"**\"",
        );
        refused(
            "    - { host: a, service: users, matches: [{ method: 'G T' }] }\n",
            8,
            "matches.method: \"G T\" is not an HTTP method",
        );
        refused(
            "    - { host: a, service: users, matches: [{ headers: { 'a b': x } }] }\n",
            8,
            "matches.headers: \"a b\" is not a valid field name",
        );
        refused(
            "    - { host: a, service: users, matches: [{ query_params: { '': x } }] }\n",
            8,
            "a parameter name is empty",
        );
        refused(
            "    - { host: a, service: users, matches: [{ method: GET }, { method: get }] }\n",
            8,
            "is the same as one at line 8",
        );
    }

    #[test]
    fn backends_and_stickiness() {
        refused(
            "    - { host: a, backends: [{ service: users, weight: 0 }, { service: billing, weight: 0 }] }\n",
            8,
            "the weights are all 0",
        );
        refused(
            "    - { host: a, backends: [{ service: users }, { service: users }] }\n",
            8,
            "service \"users\" is listed twice",
        );
        refused(
            "    - { host: a, backends: [{ service: users }], sticky: { header: x-user } }\n",
            8,
            "sticky is for routes with 2 or more backends",
        );
        refused(
            "    - { host: a, backends: [{ service: users }, { service: billing }], sticky: { cookie: 'a;b' } }\n",
            8,
            "sticky.cookie \"a;b\" is not a valid cookie name",
        );
    }

    #[test]
    fn filters() {
        refused(
            "    - host: a\n      service: users\n      matches: [{ path: { exact: /x } }]\n      url_rewrite: { path: { replace_prefix_match: / } }\n",
            11,
            "replace_prefix_match needs a route that matches by prefix",
        );
        refused(
            "    - { host: a, service: users, request_header_modifier: { set: { Host: b } } }\n",
            8,
            "request_header_modifier: \"Host\" belongs to the connection",
        );
        refused(
            "    - { host: a, service: users, response_header_modifier: { remove: [transfer-encoding] } }\n",
            8,
            "response_header_modifier: \"transfer-encoding\"",
        );
        refused(
            "    - { host: a, service: users, request_header_modifier: { add: { x-a: \"a\\nb\" } } }\n",
            8,
            "is not a valid field value",
        );
        refused(
            "    - { host: a, service: users, max_request_body: 0 }\n",
            8,
            "max_request_body must be more than 0",
        );
    }

    #[test]
    fn redirects_and_fixed_answers() {
        refused(
            "    - { host: a, request_redirect: { status_code: 200 } }\n",
            8,
            "request_redirect.status_code 200 must be 301, 302, 303, 307 or 308",
        );
        refused(
            "    - { host: a, request_redirect: { scheme: ftp } }\n",
            8,
            "request_redirect.scheme \"ftp\" must be http or https",
        );
        refused(
            "    - { host: a, direct_response: { status: 100 } }\n",
            8,
            "direct_response.status must be from 200 to 599",
        );
    }

    #[test]
    fn auth_and_cors_are_for_the_gateway() {
        refused(
            "    - { host: a, service: users, auth: public }\n",
            8,
            "outbound.routes: route \"a\": auth is for gateway routes",
        );
        refused(
            "    - { host: a, service: users, cors: { allow_origins: ['*'] } }\n",
            8,
            "cors is for gateway routes",
        );
    }

    /// The messages of gateway routes checked against `users`.
    fn gateway_errors(routes: &str) -> Vec<String> {
        let routes: Vec<crate::config::RouteConfig> = serde_saphyr::from_str(routes).unwrap();
        let services: std::collections::BTreeMap<_, _> = [(
            "users".to_owned(),
            crate::config::Located::new(crate::config::DestinationConfig::default()),
        )]
        .into();
        let mut report = super::Report {
            file: Path::new("t.yaml"),
            errors: Vec::new(),
        };
        super::check_routes("gateway.routes", &routes, &services, true, &mut report);
        report.errors.into_iter().map(|e| e.message).collect()
    }

    #[test]
    fn cors_at_the_gateway() {
        let ok = "[{ service: users, auth: public, cors: { allow_origins: ['https://app.example', \
                  'http://localhost:3000'], allow_credentials: true, allow_headers: [x-a] } }]";
        assert_eq!(gateway_errors(ok), Vec::<String>::new());
        let cases = [
            ("{ allow_origins: [] }", "cors.allow_origins is empty"),
            (
                "{ allow_origins: ['*'], allow_credentials: true }",
                "\"*\" may not be used with allow_credentials",
            ),
            (
                "{ allow_origins: [app.example] }",
                "\"app.example\" is not an origin",
            ),
            (
                "{ allow_origins: ['*'], allow_methods: ['G T'] }",
                "cors.allow_methods",
            ),
            (
                "{ allow_origins: ['*'], expose_headers: ['a b'] }",
                "cors.expose_headers",
            ),
        ];
        for (cors, want) in cases {
            let errors = gateway_errors(&format!("[{{ service: users, cors: {cors} }}]"));
            assert!(
                errors.len() == 1 && errors[0].contains(want),
                "{cors}: {errors:?}"
            );
        }
    }

    #[test]
    fn origins() {
        use super::is_origin;
        for good in [
            "https://app.example.com",
            "http://localhost:3000",
            "https://[::1]:8443",
        ] {
            assert!(is_origin(good), "{good}");
        }
        for bad in [
            "app.example.com",
            "https://a/b",
            "https://",
            "https://a:x",
            "*",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }
}
