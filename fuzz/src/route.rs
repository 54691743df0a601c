//! `outbound::route`: a request's authority (`Target::parse`, `Target::of`)
//! and path to a destination (`RouteTable::find`), checked against the
//! rules as documented:
//!
//! - routes for the request's host first (port-specific before any-port,
//!   then the longest path prefix, then config order), then the service
//!   names (`NAME`, `NAME.NS`, `NAME.NS.svc`, `NAME.NS.svc.cluster.local`),
//!   then routes for any host (`*`), in the same order;
//! - a prefix matches whole segments.
//!
//! Input: lines. `service NAME [NAMESPACE]` and `route HOST PREFIX SERVICE`
//! build the table (`ns NAMESPACE` sets the default namespace); any other
//! line is a request, `AUTHORITY [TARGET]`.

use std::cmp::Reverse;

use http::Request;
use http::uri::PathAndQuery;
use pilotfish::authority::{ANY_HOST, parse_route_host};
use pilotfish::config::{DestinationConfig, Located, OutboundConfig, RouteConfig};
use pilotfish::outbound::route::{RouteMatch, RouteTable, Target};

use super::input::{from_yaml, lines, text};

/// Checks one input.
pub fn run(data: &[u8]) {
    // Every field at its default (so the target follows the schema).
    let mut outbound: OutboundConfig = from_yaml("{}");
    let mut default_namespace = "default".to_owned();
    let mut requests = Vec::new();
    for line in lines(data).filter_map(text) {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["service", name, rest @ ..] if rest.len() <= 1 => {
                let dst = DestinationConfig {
                    namespace: rest.first().map(|ns| (*ns).to_owned()),
                    ..DestinationConfig::default()
                };
                outbound
                    .services
                    .insert((*name).to_owned(), Located::new(dst));
            }
            ["route", host, prefix, service] => {
                let mut route: RouteConfig = from_yaml("{ host: h, service: s }");
                route.host = Located::new((*host).to_owned());
                route.path_prefix = (*prefix).to_owned();
                route.service = Some(Located::new((*service).to_owned()));
                outbound.routes.push(route);
            }
            ["ns", ns] => default_namespace = (*ns).to_owned(),
            [authority] => requests.push((*authority, "/")),
            [authority, target] => requests.push((*authority, *target)),
            _ => {}
        }
    }
    let table = RouteTable::build(&outbound, &default_namespace);
    for (authority, target) in requests {
        check_route_host(authority);
        let Some(parsed) = check_target(authority) else {
            continue;
        };
        // The path as the outbound side hands it over: a request target's
        // path, normalized.
        // Origin form, as a server accepts it.
        let Ok(pq) = PathAndQuery::try_from(target) else {
            continue;
        };
        if !target.starts_with('/') {
            continue;
        }
        let Some(path) = pilotfish::http::path::normalize(pq.path()) else {
            continue; // refused with 400 before routing
        };
        let found = table.find(&parsed, &path);
        let want = model(&outbound, &default_namespace, &parsed, &path);
        assert_eq!(found, want, "{authority} {path}");
        check_request(authority, pq.as_str(), &parsed);
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

/// One candidate, as the documentation orders them.
struct Candidate {
    port: Option<u16>,
    prefix: String,
    found: RouteMatch,
}

/// What the documented rules say `find` returns.
fn model(
    outbound: &OutboundConfig,
    default_namespace: &str,
    target: &Target<'_>,
    path: &str,
) -> Option<RouteMatch> {
    let index = |name: &str| outbound.services.keys().position(|k| k == name);
    let explicit = |any: bool| {
        let mut candidates: Vec<Candidate> = outbound
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, route)| {
                let (host, port) = parse_route_host(&route.host).ok()?;
                let destination = index(route.service.as_ref()?)?;
                let wanted = if any {
                    host == ANY_HOST
                } else {
                    host != ANY_HOST && host == target.host
                };
                wanted.then(|| Candidate {
                    port,
                    prefix: route.path_prefix.clone(),
                    found: RouteMatch {
                        destination,
                        route: Some(i),
                    },
                })
            })
            .collect();
        candidates.sort_by_key(|c| (c.port.is_none(), Reverse(c.prefix.len())));
        candidates
    };
    let mut for_host = explicit(false);
    for (i, (name, dst)) in outbound.services.iter().enumerate() {
        let ns = dst.namespace.as_deref().unwrap_or(default_namespace);
        let names = [
            name.clone(),
            format!("{name}.{ns}"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}.svc.cluster.local"),
        ];
        if names.iter().any(|n| *n == target.host) {
            for_host.push(Candidate {
                port: None,
                prefix: "/".to_owned(),
                found: RouteMatch {
                    destination: i,
                    route: None,
                },
            });
        }
    }
    let matches = |c: &&Candidate| {
        (c.port.is_none() || c.port == target.port) && whole_segments(&c.prefix, path)
    };
    if let Some(c) = for_host.iter().find(matches) {
        return Some(c.found);
    }
    explicit(true).iter().find(matches).map(|c| c.found)
}

/// `/users` matches `/users`, `/users/` and `/users/7`, not `/usersx`.
fn whole_segments(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}
