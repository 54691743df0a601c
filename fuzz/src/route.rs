//! `routing`: a request's authority (`Target::parse`, `Target::of`) and
//! path to a route (`RouteTable::find`), checked against the rules as
//! documented:
//!
//! - routes for the request's host first (port-specific before any-port),
//!   then the service names (`NAME`, `NAME.NS`, `NAME.NS.svc`,
//!   `NAME.NS.svc.cluster.local`), then routes for any host (`*`);
//! - among those, an exact path before a prefix or pattern, then the longer
//!   path (a prefix's length, a pattern's literal segments), then config
//!   order;
//! - a prefix matches whole segments; a pattern's `*` is one non-empty
//!   segment, a final `**` any rest;
//! - a request without a host reaches only `*` routes for any port.
//!
//! Input: lines. `service NAME [NAMESPACE]`, `route HOST PREFIX SERVICE`,
//! `exact HOST PATH SERVICE` and `pattern HOST PATTERN SERVICE` build the
//! table (`ns NAMESPACE` sets the default namespace); any other line is a
//! request, `AUTHORITY [TARGET]` (`*` as the authority: no host at all).

use std::collections::BTreeMap;

use http::Request;
use http::uri::PathAndQuery;
use pilotfish::authority::{ANY_HOST, parse_route_host};
use pilotfish::config::{Located, MatchConfig, PathMatch, RouteConfig};
use pilotfish::routing::{RouteRef, RouteTable, Target};

use super::input::{from_yaml, lines, text};

/// Checks one input.
pub fn run(data: &[u8]) {
    let mut services: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut routes: Vec<RouteConfig> = Vec::new();
    let mut default_namespace = "default".to_owned();
    let mut requests = Vec::new();
    for line in lines(data).filter_map(text) {
        let words: Vec<&str> = line.split(' ').collect();
        let mut route = |host: &str, path: Option<PathMatch>, prefix: &str, service: &str| {
            // Every other field at its default (so the target follows the
            // schema).
            let mut route: RouteConfig = from_yaml("{ host: h, service: s }");
            route.host = Located::new(host.to_owned());
            route.path_prefix = prefix.to_owned();
            route.service = Some(Located::new(service.to_owned()));
            if let Some(path) = path {
                route.matches = vec![Located::new(MatchConfig {
                    path: Some(path),
                    ..MatchConfig::default()
                })];
            }
            routes.push(route);
        };
        match words.as_slice() {
            ["service", name, rest @ ..] if rest.len() <= 1 => {
                let ns = rest.first().map(|ns| (*ns).to_owned());
                services.insert((*name).to_owned(), ns);
            }
            ["route", host, prefix, service] => route(host, None, prefix, service),
            ["exact", host, path, service] => route(
                host,
                Some(PathMatch::Exact((*path).to_owned())),
                "/",
                service,
            ),
            ["pattern", host, pattern, service] => route(
                host,
                Some(PathMatch::Pattern((*pattern).to_owned())),
                "/",
                service,
            ),
            ["ns", ns] => default_namespace = (*ns).to_owned(),
            [authority] => requests.push((*authority, "/")),
            [authority, target] => requests.push((*authority, *target)),
            _ => {}
        }
    }
    let named: Vec<(&str, &str)> = services
        .iter()
        .map(|(name, ns)| (name.as_str(), ns.as_deref().unwrap_or(&default_namespace)))
        .collect();
    let table = RouteTable::build(&routes, &named, true);
    for (authority, target) in requests {
        let parsed = if authority == "*" {
            None
        } else {
            check_route_host(authority);
            match check_target(authority) {
                Some(parsed) => Some(parsed),
                None => continue,
            }
        };
        // Origin form, as a server accepts it.
        let Ok(pq) = PathAndQuery::try_from(target) else {
            continue;
        };
        if !target.starts_with('/') {
            continue;
        }
        // The path as the outbound side hands it over: normalized.
        let Some(path) = pilotfish::http::path::normalize(pq.path()) else {
            continue; // refused with 400 before routing
        };
        let Ok(req) = Request::get(path.as_ref()).body(()) else {
            continue;
        };
        let found = table
            .find(parsed.as_ref(), &req)
            .map(|m| (m.to, m.prefix.map(str::to_owned)));
        let want = model(&routes, &named, parsed.as_ref(), &path);
        assert_eq!(found, want, "{authority} {path}");
        if let Some(parsed) = &parsed {
            check_request(authority, pq.as_str(), parsed);
        }
    }
}

/// `Target::parse`: a lowercase host, never empty; a trailing dot (the
/// root) names the same host.
fn check_target(authority: &str) -> Option<Target<'_>> {
    let target = Target::parse(authority)?;
    assert!(!target.host.is_empty(), "{authority:?}: empty host");
    assert!(
        !target.host.bytes().any(|b| b.is_ascii_uppercase()),
        "{authority:?}: {:?} not lowercase",
        target.host
    );
    assert_eq!(target.authority, authority);
    if target.port.is_none() && !authority.ends_with('.') && !authority.ends_with(']') {
        let rooted = format!("{authority}.");
        let same = Target::parse(&rooted).map(|t| (t.host.into_owned(), t.port));
        assert_eq!(same, Some((target.host.to_string(), None)), "{rooted:?}");
    }
    Some(target)
}

/// A route's host is a bare host name, maybe with a port, or `*`.
fn check_route_host(text: &str) {
    if let Ok((host, port)) = parse_route_host(text) {
        if host != ANY_HOST {
            assert!(
                !host.contains(['/', ' ', '@']) && !host.is_empty(),
                "{text:?}"
            );
            assert_eq!(
                Target::parse(text).map(|t| (t.host.into_owned(), t.port)),
                Some((host, port))
            );
        }
    }
}

/// `Target::of` reads the same target from the URI (absolute form) or,
/// for an origin-form request, from `Host`.
fn check_request(authority: &str, target: &str, parsed: &Target<'_>) {
    let by_host = Request::get(target)
        .header(http::header::HOST, authority)
        .body(());
    // The absolute form only when the authority is one a URI can hold.
    let by_uri = http::uri::Authority::try_from(authority)
        .map_err(http::Error::from)
        .and_then(|_| Request::get(format!("http://{authority}{target}")).body(()));
    for req in [by_host, by_uri].into_iter().flatten() {
        if let Ok(got) = Target::of(&req) {
            assert_eq!(got.host, parsed.host, "{req:?}");
            assert_eq!(got.port, parsed.port, "{req:?}");
        }
    }
}

/// How a candidate's path matches, as the documentation says.
enum Rule {
    Exact(String),
    Prefix(String),
    /// Segments (`*` or literal) and whether a final `**` takes any rest.
    Pattern(Vec<String>, bool),
}

impl Rule {
    fn of(route: &RouteConfig) -> Option<Self> {
        Some(match route.matches.first().and_then(|m| m.path.as_ref()) {
            None => Self::Prefix(route.path_prefix.clone()),
            Some(PathMatch::Exact(p)) => Self::Exact(p.clone()),
            Some(PathMatch::Prefix(p)) => Self::Prefix(p.clone()),
            Some(pattern @ PathMatch::Pattern(p)) => {
                // What validation refuses is never matched.
                pattern.check().ok()?;
                let mut segments: Vec<String> = p[1..]
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                let rest = segments.last().is_some_and(|s| s == "**");
                if rest {
                    segments.pop();
                }
                Self::Pattern(segments, rest)
            }
        })
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => p == path,
            Self::Prefix(p) => whole_segments(p, path),
            Self::Pattern(segments, rest) => {
                let got: Vec<&str> = if path == "/" {
                    Vec::new()
                } else {
                    path[1..].split('/').collect()
                };
                let fits = if *rest {
                    got.len() >= segments.len()
                } else {
                    got.len() == segments.len()
                };
                fits && segments.iter().zip(&got).all(|(want, got)| {
                    if want == "*" {
                        !got.is_empty()
                    } else {
                        want == got
                    }
                })
            }
        }
    }

    /// Higher ranks first: an exact path, then the longer path.
    fn rank(&self) -> (bool, usize) {
        match self {
            Self::Exact(p) => (true, p.len()),
            Self::Prefix(p) => (false, p.trim_end_matches('/').len()),
            Self::Pattern(segments, _) => (
                false,
                segments
                    .iter()
                    .filter(|s| *s != "*")
                    .map(|s| 1 + s.len())
                    .sum(),
            ),
        }
    }
}

/// What the documented rules say `find` returns: the route and the prefix
/// it matched by.
fn model(
    routes: &[RouteConfig],
    services: &[(&str, &str)],
    target: Option<&Target<'_>>,
    path: &str,
) -> Option<(RouteRef, Option<String>)> {
    let port = target.and_then(|t| t.port);
    // The best matching route for host `wanted`, by the documented order.
    let best = |wanted: &str| {
        routes
            .iter()
            .enumerate()
            .filter_map(|(i, route)| {
                let (host, route_port) = parse_route_host(&route.host).ok()?;
                let known = route
                    .service
                    .as_ref()
                    .is_some_and(|s| services.iter().any(|(n, _)| *n == s.as_str()));
                if host != wanted || !(known || services.is_empty()) {
                    return None;
                }
                let rule = Rule::of(route)?;
                let port_ok = match route_port {
                    None => true,
                    Some(p) => target.is_some() && port == Some(p),
                };
                (port_ok && rule.matches(path)).then_some((route_port.is_some(), rule, i))
            })
            .max_by(|(a_port, a, a_i), (b_port, b, b_i)| {
                (a_port, a.rank())
                    .cmp(&(b_port, b.rank()))
                    .then(b_i.cmp(a_i))
            })
            .map(|(_, rule, i)| {
                let prefix = match rule {
                    Rule::Prefix(p) => Some(p),
                    _ => None,
                };
                (RouteRef::Route(i), prefix)
            })
    };
    if let Some(target) = target {
        if let Some(found) = best(&target.host) {
            return Some(found);
        }
        for (i, (name, ns)) in services.iter().enumerate() {
            let names = [
                (*name).to_owned(),
                format!("{name}.{ns}"),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}.svc.cluster.local"),
            ];
            if names.iter().any(|n| *n == target.host) {
                return Some((RouteRef::Service(i), Some("/".to_owned())));
            }
        }
    }
    best(ANY_HOST)
}

/// `/users` matches `/users`, `/users/` and `/users/7`, not `/usersx`.
fn whole_segments(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}
