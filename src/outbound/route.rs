//! Routing, as pure functions: which destination a request is for, from its
//! authority (absolute-form URI, HTTP/2 `:authority`, or `Host`) and path.

use std::borrow::Cow;
use std::collections::HashMap;

use http::Request;
use http::header::HOST;

use crate::authority::{self, ANY_HOST, parse_route_host};
use crate::config::OutboundConfig;
use crate::http::ProxyError;

/// The destination a request names: its host (lowercase, no trailing dot)
/// and port, if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// Host name or IP literal.
    pub host: Cow<'a, str>,
    /// Port from the authority.
    pub port: Option<u16>,
    /// The authority as the client wrote it, for the upstream request.
    pub authority: &'a str,
}

impl<'a> Target<'a> {
    /// Reads the target of a request: the URI's authority when the request
    /// is in absolute form (an `HTTP_PROXY` client) or HTTP/2, else `Host`.
    pub fn of<B>(req: &'a Request<B>) -> Result<Self, ProxyError> {
        let authority = match req.uri().authority() {
            Some(authority) => authority.as_str(),
            None => req
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or(ProxyError::NoAuthority)?,
        };
        Self::parse(authority).ok_or(ProxyError::NoAuthority)
    }

    /// Splits `host[:port]` (IPv6 literals in brackets); `None` if malformed
    /// ([`authority::split`]).
    pub fn parse(authority: &'a str) -> Option<Self> {
        let (host, port) = authority::split(authority)?;
        Some(Self {
            host,
            port,
            authority,
        })
    }
}

/// One candidate for a host.
#[derive(Debug, Clone)]
struct Entry {
    port: Option<u16>,
    prefix: String,
    target: RouteMatch,
}

/// What a request matched: a destination (by its index in the services,
/// sorted by name) and the explicit route (its index in `routes`), if it
/// matched one rather than a service name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index of the destination.
    pub destination: usize,
    /// Index of the explicit route.
    pub route: Option<usize>,
}

/// Host (+ port) and path prefix -> destination index.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    by_host: HashMap<String, Vec<Entry>>,
    /// Routes with host `*`, tried when no host-specific route matches.
    any_host: Vec<Entry>,
}

impl RouteTable {
    /// Builds the table for `outbound`, whose services are numbered in the
    /// order of `outbound.services` (sorted by name). Each service answers
    /// to `NAME`, `NAME.NS`, `NAME.NS.svc` and `NAME.NS.svc.cluster.local`
    /// (`NS` is the destination's namespace, else `default_namespace`);
    /// explicit routes are tried first, longest path prefix first.
    pub fn build(outbound: &OutboundConfig, default_namespace: &str) -> Self {
        let index: HashMap<&str, usize> = outbound
            .services
            .keys()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i))
            .collect();
        let mut by_host: HashMap<String, Vec<Entry>> = HashMap::new();
        let mut any_host = Vec::new();
        for (route_index, route) in outbound.routes.iter().enumerate() {
            let (Ok((host, port)), Some(&destination)) = (
                parse_route_host(&route.host),
                route.service.as_ref().and_then(|s| index.get(s.as_str())),
            ) else {
                continue; // reported by config validation
            };
            let entry = Entry {
                port,
                prefix: route.path_prefix.clone(),
                target: RouteMatch {
                    destination,
                    route: Some(route_index),
                },
            };
            if host == ANY_HOST {
                any_host.push(entry);
            } else {
                by_host.entry(host).or_default().push(entry);
            }
        }
        // Explicit routes first, port-specific before any-port, then the
        // longest prefix; the sort is stable, so service names come last.
        for entries in by_host.values_mut().chain(std::iter::once(&mut any_host)) {
            entries.sort_by_key(|e| (e.port.is_none(), std::cmp::Reverse(e.prefix.len())));
        }
        for (name, dst) in &outbound.services {
            let ns = dst.namespace.as_deref().unwrap_or(default_namespace);
            let destination = index[name.as_str()];
            for host in [
                name.clone(),
                format!("{name}.{ns}"),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}.svc.cluster.local"),
            ] {
                by_host.entry(host).or_default().push(Entry {
                    port: None,
                    prefix: "/".to_owned(),
                    target: RouteMatch {
                        destination,
                        route: None,
                    },
                });
            }
        }
        Self { by_host, any_host }
    }

    /// The destination for a target and path, if any route matches:
    /// routes for the host first, then routes for any host (`*`).
    pub fn find(&self, target: &Target<'_>, path: &str) -> Option<RouteMatch> {
        let matches = |e: &&Entry| {
            (e.port.is_none() || e.port == target.port) && prefix_matches(&e.prefix, path)
        };
        self.by_host
            .get(target.host.as_ref())
            .and_then(|entries| entries.iter().find(matches))
            .or_else(|| self.any_host.iter().find(matches))
            .map(|e| e.target)
    }
}

impl RouteTable {
    /// The catch-all route (`*`) for a request that names no host at all.
    pub fn find_any_host(&self, path: &str) -> Option<RouteMatch> {
        self.any_host
            .iter()
            .find(|e| e.port.is_none() && prefix_matches(&e.prefix, path))
            .map(|e| e.target)
    }
}

/// Whole-segment prefix match: `/users` matches `/users`, `/users/`,
/// `/users/7` and `/users?x`, but not `/usersx`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DestinationConfig, Located, RouteConfig};

    fn outbound(services: &[&str], routes: &[(&str, &str, &str)]) -> OutboundConfig {
        OutboundConfig {
            listen: Located::new("127.0.0.1:0".parse().unwrap()),
            max_connections: Located::new(10),
            services: services
                .iter()
                .map(|name| {
                    let dst = DestinationConfig {
                        endpoints: vec![Located::new("127.0.0.1:1".parse().unwrap())],
                        ..DestinationConfig::default()
                    };
                    ((*name).to_owned(), Located::new(dst))
                })
                .collect(),
            routes: routes
                .iter()
                .map(|(host, prefix, service)| RouteConfig::to_service(host, prefix, service))
                .collect(),
            detect_timeout: Located::new(crate::config::HumanDuration::from_secs(1)),
            opaque_ports: Vec::new(),
            unknown_destinations: Default::default(),
        }
    }

    #[test]
    fn targets() {
        type HostPort<'a> = Option<(&'a str, Option<u16>)>;
        let cases: &[(&str, HostPort)] = &[
            ("users", Some(("users", None))),
            ("Users:8080", Some(("users", Some(8080)))),
            (
                "users.default.svc.cluster.local.",
                Some(("users.default.svc.cluster.local", None)),
            ),
            ("[::1]:80", Some(("::1", Some(80)))),
            ("[::1]", Some(("::1", None))),
            ("user@users:1", Some(("users", Some(1)))),
            ("users:http", None),
            (":80", None),
            ("[::1", None),
        ];
        for (authority, want) in cases {
            let got = Target::parse(authority).map(|t| (t.host.into_owned(), t.port));
            let want = want.map(|(h, p)| (h.to_owned(), p));
            assert_eq!(got, want, "{authority}");
        }
    }

    #[test]
    fn routing_table() {
        // services are numbered by name: api-v2 = 0, orders = 1, users = 2
        let table = RouteTable::build(
            &outbound(
                &["users", "orders", "api-v2"],
                &[
                    ("api.example", "/users", "users"),
                    ("api.example", "/", "orders"),
                    ("api.example:8443", "/users", "api-v2"),
                    ("users", "/v2", "api-v2"),
                ],
            ),
            "default",
        );
        let cases: &[(&str, &str, Option<usize>)] = &[
            ("users", "/users/1", Some(2)),
            ("USERS:80", "/", Some(2)),
            ("users.default", "/x", Some(2)),
            ("users.default.svc.cluster.local", "/x", Some(2)),
            ("users", "/v2/x", Some(0)),
            ("users", "/v2x", Some(2)),
            ("api.example", "/users/7", Some(2)),
            ("api.example", "/usersx", Some(1)),
            ("api.example", "/", Some(1)),
            ("api.example:8443", "/users", Some(0)),
            ("api.example:8443", "/orders", Some(1)),
            ("users.other", "/", None),
            ("nowhere", "/", None),
        ];
        for (authority, path, want) in cases {
            let target = Target::parse(authority).unwrap();
            let found = table.find(&target, path).map(|m| m.destination);
            assert_eq!(found, *want, "{authority}{path}");
        }
    }

    #[test]
    fn any_host_routes_catch_what_nothing_else_matches() {
        // services: legacy = 0, users = 1
        let table = RouteTable::build(
            &outbound(
                &["users", "legacy"],
                &[("*", "/", "legacy"), ("*", "/users", "users")],
            ),
            "default",
        );
        let cases: &[(&str, &str, Option<usize>)] = &[
            ("users", "/anything", Some(1)),
            ("bench", "/", Some(0)),
            ("127.0.0.1:8080", "/x", Some(0)),
            ("bench", "/users/1", Some(1)),
        ];
        for (authority, path, want) in cases {
            let target = Target::parse(authority).unwrap();
            let found = table.find(&target, path).map(|m| m.destination);
            assert_eq!(found, *want, "{authority}{path}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/users", "/users"));
        assert!(prefix_matches("/users/", "/users/7"));
        assert!(prefix_matches("/users", "/users/7"));
        assert!(!prefix_matches("/users", "/usersx"));
        assert!(!prefix_matches("/users", "/"));
    }
}
