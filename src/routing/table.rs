//! The route table: a request's host, port, path, method, header fields
//! and query parameters to a route (or to a destination by its name), with
//! the precedence of the [module docs](super).

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::HashMap;

use http::header::HOST;
use http::{HeaderName, Method, Request};

use crate::authority::{self, ANY_HOST, parse_route_host};
use crate::config::{MatchConfig, PathMatch, RouteConfig, parse_method};
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

/// What a match leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRef {
    /// A route, by its index in the routes the table was built from.
    Route(usize),
    /// A destination matched by its name, by its index in the services.
    Service(usize),
}

/// The route a request matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched<'t> {
    /// Where it goes.
    pub to: RouteRef,
    /// The prefix the request matched (the route's `path_prefix`, or a
    /// `prefix` match), for `replace_prefix_match`.
    pub prefix: Option<&'t str>,
}

/// How a candidate matches paths.
#[derive(Debug, Clone)]
enum PathRule {
    Exact(String),
    /// Whole segments; kept as configured (for [`Matched::prefix`]).
    Prefix(String),
    Pattern(Pattern),
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) => prefix_matches(prefix, path),
            Self::Pattern(pattern) => pattern.matches(path),
        }
    }

    /// The length that ranks it among prefixes and patterns.
    fn rank_len(&self) -> usize {
        match self {
            Self::Exact(exact) => exact.len(),
            Self::Prefix(prefix) => prefix.trim_end_matches('/').len(),
            Self::Pattern(pattern) => pattern.literal_len(),
        }
    }
}

/// A compiled `pattern`: segments, each literal or `*`; maybe a final `**`.
#[derive(Debug, Clone)]
struct Pattern {
    segments: Vec<Segment>,
    rest: bool,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Any,
}

impl Pattern {
    /// `None` unless the grammar holds (validation reports why).
    fn parse(text: &str) -> Option<Self> {
        let body = text.strip_prefix('/')?;
        let mut pattern = Self {
            segments: Vec::new(),
            rest: false,
        };
        if body.is_empty() {
            return Some(pattern);
        }
        let mut parts = body.split('/').peekable();
        while let Some(part) = parts.next() {
            match part {
                "" => return None,
                "**" if parts.peek().is_none() => pattern.rest = true,
                "*" => pattern.segments.push(Segment::Any),
                literal if !literal.contains('*') => {
                    pattern.segments.push(Segment::Literal(literal.to_owned()))
                }
                _ => return None,
            }
        }
        Some(pattern)
    }

    /// One pass over the path's segments.
    fn matches(&self, path: &str) -> bool {
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        if self.segments.is_empty() && !self.rest {
            return body.is_empty();
        }
        // `/` has no segments (not one empty one).
        let mut segments = (!body.is_empty())
            .then(|| body.split('/'))
            .into_iter()
            .flatten();
        for want in &self.segments {
            match (want, segments.next()) {
                (Segment::Any, Some(got)) if !got.is_empty() => {}
                (Segment::Literal(literal), Some(got)) if got == literal => {}
                _ => return false,
            }
        }
        self.rest || segments.next().is_none()
    }

    /// The bytes of the literal segments with their slashes.
    fn literal_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => 1 + l.len(),
                Segment::Any => 0,
            })
            .sum()
    }
}

/// One way to reach a route (a route has one per `matches` entry).
#[derive(Debug, Clone)]
struct Candidate {
    /// Service names rank after every route for the host.
    by_name: bool,
    port: Option<u16>,
    path: PathRule,
    method: Option<Method>,
    headers: Vec<(HeaderName, String)>,
    query: Vec<(String, String)>,
    order: usize,
    to: RouteRef,
}

impl Candidate {
    /// The precedence of the module docs: the smallest key wins.
    #[allow(clippy::type_complexity)]
    fn key(
        &self,
    ) -> (
        bool,
        bool,
        bool,
        Reverse<usize>,
        bool,
        Reverse<usize>,
        Reverse<usize>,
        usize,
    ) {
        (
            self.by_name,
            self.port.is_none(),
            !matches!(self.path, PathRule::Exact(_)),
            Reverse(self.path.rank_len()),
            self.method.is_none(),
            Reverse(self.headers.len()),
            Reverse(self.query.len()),
            self.order,
        )
    }

    fn matches<B>(&self, port: Option<u16>, req: &Request<B>, query: &mut Query<'_>) -> bool {
        (self.port.is_none() || self.port == port)
            && self.path.matches(req.uri().path())
            && self.method.as_ref().is_none_or(|m| m == req.method())
            && self.headers.iter().all(|(name, value)| {
                req.headers()
                    .get_all(name)
                    .iter()
                    .any(|v| v.as_bytes() == value.as_bytes())
            })
            && self
                .query
                .iter()
                .all(|(name, value)| query.get(name).is_some_and(|v| v == value))
    }

    fn matched(&self) -> Matched<'_> {
        Matched {
            to: self.to,
            prefix: match &self.path {
                PathRule::Prefix(prefix) => Some(prefix.as_str()),
                _ => None,
            },
        }
    }
}

/// A request's query parameters, decoded once, when a candidate asks.
struct Query<'r> {
    raw: Option<&'r str>,
    decoded: Option<Vec<(String, String)>>,
}

impl Query<'_> {
    /// The first value of `name`.
    fn get(&mut self, name: &str) -> Option<&str> {
        let raw = self.raw;
        self.decoded
            .get_or_insert_with(|| parse_query(raw.unwrap_or("")))
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `a=1&b=x%20y` as form fields: `+` is a space, `%XX` a byte (invalid
/// UTF-8 replaced); a name without `=` has the empty value.
fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Host (+ port), path, method, fields and query -> route or destination.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    by_host: HashMap<String, Vec<Candidate>>,
    /// Routes with host `*`, tried when nothing for the host matches.
    any_host: Vec<Candidate>,
}

impl RouteTable {
    /// Builds the table. `services`: (name, namespace) in index order.
    /// With `by_name`, each answers to `NAME`, `NAME.NS`, `NAME.NS.svc`
    /// and `NAME.NS.svc.cluster.local` (a sidecar's app; never the
    /// gateway's clients, who reach only what its routes name). Routes to
    /// services not among them, and parts that do not parse, are skipped
    /// (validation reports them).
    pub fn build(routes: &[RouteConfig], services: &[(&str, &str)], by_name: bool) -> Self {
        let mut table = Self::default();
        let known = |name: &str| services.iter().any(|(n, _)| *n == name);
        for (index, route) in routes.iter().enumerate() {
            let Ok((host, port)) = parse_route_host(&route.host) else {
                continue;
            };
            if !route.services().all(|s| known(s)) {
                continue;
            }
            let list = if host == ANY_HOST {
                &mut table.any_host
            } else {
                table.by_host.entry(host).or_default()
            };
            let to = RouteRef::Route(index);
            if route.matches.is_empty() {
                list.push(Candidate {
                    by_name: false,
                    port,
                    path: PathRule::Prefix(route.path_prefix.clone()),
                    method: None,
                    headers: Vec::new(),
                    query: Vec::new(),
                    order: index,
                    to,
                });
            }
            for m in &route.matches {
                if let Some(mut candidate) = compile_match(m.get(), to) {
                    candidate.port = port;
                    candidate.order = index;
                    list.push(candidate);
                }
            }
        }
        for (index, (name, ns)) in services.iter().enumerate().filter(|_| by_name) {
            for host in [
                (*name).to_owned(),
                format!("{name}.{ns}"),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}.svc.cluster.local"),
            ] {
                table.by_host.entry(host).or_default().push(Candidate {
                    by_name: true,
                    port: None,
                    path: PathRule::Prefix("/".to_owned()),
                    method: None,
                    headers: Vec::new(),
                    query: Vec::new(),
                    order: index,
                    to: RouteRef::Service(index),
                });
            }
        }
        for list in table
            .by_host
            .values_mut()
            .chain(std::iter::once(&mut table.any_host))
        {
            list.sort_by_cached_key(Candidate::key);
        }
        table
    }

    /// The route for a request. `target`: `None` when the request names no
    /// host (HTTP/1.0 without `Host`): only `*` routes for any port apply.
    pub fn find<B>(&self, target: Option<&Target<'_>>, req: &Request<B>) -> Option<Matched<'_>> {
        let mut query = Query {
            raw: req.uri().query(),
            decoded: None,
        };
        let port = target.and_then(|t| t.port);
        let for_host = target
            .and_then(|t| self.by_host.get(t.host.as_ref()))
            .and_then(|list| find_in(list, target.is_some(), port, req, &mut query));
        for_host.or_else(|| find_in(&self.any_host, target.is_some(), port, req, &mut query))
    }
}

fn find_in<'t, B>(
    list: &'t [Candidate],
    has_target: bool,
    port: Option<u16>,
    req: &Request<B>,
    query: &mut Query<'_>,
) -> Option<Matched<'t>> {
    list.iter()
        .find(|c| (has_target || c.port.is_none()) && c.matches(port, req, query))
        .map(Candidate::matched)
}

/// A `matches` entry as a candidate; `None` if a part does not parse.
fn compile_match(m: &MatchConfig, to: RouteRef) -> Option<Candidate> {
    let path = match &m.path {
        None => PathRule::Prefix("/".to_owned()),
        Some(PathMatch::Exact(exact)) => PathRule::Exact(exact.clone()),
        Some(PathMatch::Prefix(prefix)) => PathRule::Prefix(prefix.clone()),
        Some(PathMatch::Pattern(pattern)) => PathRule::Pattern(Pattern::parse(pattern)?),
    };
    let method = match &m.method {
        Some(method) => Some(parse_method(method).ok()?),
        None => None,
    };
    let headers = m
        .headers
        .iter()
        .map(|(name, value)| Some((HeaderName::from_bytes(name.as_bytes()).ok()?, value.clone())))
        .collect::<Option<Vec<_>>>()?;
    Some(Candidate {
        by_name: false,
        port: None,
        path,
        method,
        headers,
        query: m
            .query_params
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        order: 0,
        to,
    })
}

/// Whole-segment prefix match: `/users` matches `/users`, `/users/` and
/// `/users/7`, not `/usersx`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(yaml: &str) -> Vec<RouteConfig> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn get(
        table: &RouteTable,
        authority: Option<&str>,
        method: &str,
        uri: &str,
    ) -> Option<(RouteRef, Option<String>)> {
        get_with(table, authority, method, uri, &[])
    }

    fn get_with(
        table: &RouteTable,
        authority: Option<&str>,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Option<(RouteRef, Option<String>)> {
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(()).unwrap();
        let target = authority.map(|a| Target::parse(a).unwrap());
        table
            .find(target.as_ref(), &req)
            .map(|m| (m.to, m.prefix.map(str::to_owned)))
    }

    fn route(i: usize) -> Option<RouteRef> {
        Some(RouteRef::Route(i))
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
    fn hosts_ports_prefixes_and_service_names() {
        let table = RouteTable::build(
            &routes(
                "[{host: api.example, path_prefix: /users, service: users},
                  {host: api.example, service: orders},
                  {host: 'api.example:8443', path_prefix: /users, service: api-v2},
                  {host: users, path_prefix: /v2, service: api-v2}]",
            ),
            &[
                ("api-v2", "default"),
                ("orders", "default"),
                ("users", "default"),
            ],
            true,
        );
        let service = |i| Some(RouteRef::Service(i));
        let cases: &[(&str, &str, Option<RouteRef>)] = &[
            ("users", "/users/1", service(2)),
            ("USERS:80", "/", service(2)),
            ("users.default", "/x", service(2)),
            ("users.default.svc.cluster.local", "/x", service(2)),
            ("users", "/v2/x", route(3)),
            ("users", "/v2x", service(2)),
            ("api.example", "/users/7", route(0)),
            ("api.example", "/usersx", route(1)),
            ("api.example", "/", route(1)),
            ("api.example:8443", "/users", route(2)),
            ("api.example:8443", "/orders", route(1)),
            ("users.other", "/", None),
            ("nowhere", "/", None),
        ];
        for (authority, path, want) in cases {
            let got = get(&table, Some(authority), "GET", path).map(|m| m.0);
            assert_eq!(got, *want, "{authority}{path}");
        }
        assert_eq!(
            get(&table, Some("users"), "GET", "/v2/x"),
            Some((RouteRef::Route(3), Some("/v2".to_owned())))
        );
        assert_eq!(
            get(&table, Some("users"), "GET", "/x").unwrap().1,
            Some("/".to_owned())
        );
    }

    #[test]
    fn any_host_routes_and_requests_without_a_host() {
        let table = RouteTable::build(
            &routes(
                "[{host: '*', service: legacy},
                  {host: '*', path_prefix: /users, service: users}]",
            ),
            &[("legacy", "default"), ("users", "default")],
            true,
        );
        let cases: &[(Option<&str>, &str, Option<RouteRef>)] = &[
            (Some("users"), "/anything", Some(RouteRef::Service(1))),
            (Some("bench"), "/", route(0)),
            (Some("127.0.0.1:8080"), "/x", route(0)),
            (Some("bench"), "/users/1", route(1)),
            (None, "/users/1", route(1)),
            (None, "/", route(0)),
        ];
        for (authority, path, want) in cases {
            let got = get(&table, *authority, "GET", path).map(|m| m.0);
            assert_eq!(got, *want, "{authority:?}{path}");
        }
        let empty = RouteTable::build(&[], &[("users", "default")], true);
        assert_eq!(get(&empty, None, "GET", "/"), None);
    }

    #[test]
    fn precedence() {
        let table = RouteTable::build(
            &routes(
                "[{host: h, matches: [{path: {prefix: /api}}], service: a},
                  {host: h, matches: [{path: {exact: /api/login}}], service: a},
                  {host: h, matches: [{path: {prefix: /api/v1}}], service: a},
                  {host: h, matches: [{path: {prefix: /api}, method: post}], service: a},
                  {host: h, matches: [{path: {prefix: /api}, headers: {x-canary: 'yes'}}], service: a},
                  {host: h, matches: [{path: {prefix: /api}, headers: {x-canary: 'yes', x-b: '1'}}], service: a},
                  {host: h, matches: [{path: {prefix: /api}, query_params: {v: '2'}}], service: a},
                  {host: h, matches: [{path: {prefix: /api}, method: POST}], service: a},
                  {host: h, matches: [{path: {pattern: /api/v1/*/x}}], service: a}]",
            ),
            &[("a", "default")], true);
        let h = Some("h");
        // exact beats any prefix or pattern
        assert_eq!(get(&table, h, "POST", "/api/login").map(|m| m.0), route(1));
        // the longer prefix
        assert_eq!(get(&table, h, "POST", "/api/v1/z").map(|m| m.0), route(2));
        // a pattern's literal length (/api/v1 + /x) beats the prefix /api/v1
        assert_eq!(get(&table, h, "GET", "/api/v1/7/x").map(|m| m.0), route(8));
        // a method beats headers; then file order among equals
        let both = [("x-canary", "yes")];
        assert_eq!(
            get_with(&table, h, "POST", "/api/x", &both).map(|m| m.0),
            route(3)
        );
        // more header matches beat fewer, and headers beat query parameters
        let two = [("x-canary", "yes"), ("X-B", "1")];
        assert_eq!(
            get_with(&table, h, "GET", "/api/x?v=2", &two).map(|m| m.0),
            route(5)
        );
        assert_eq!(
            get_with(&table, h, "GET", "/api/x?v=2", &both).map(|m| m.0),
            route(4)
        );
        assert_eq!(get(&table, h, "GET", "/api/x?v=2").map(|m| m.0), route(6));
        assert_eq!(get(&table, h, "GET", "/api/x?v=3").map(|m| m.0), route(0));
        // header values are exact
        let other = [("x-canary", "YES")];
        assert_eq!(
            get_with(&table, h, "GET", "/api", &other).map(|m| m.0),
            route(0)
        );
        // prefixes for ReplacePrefixMatch; none for exact or pattern
        assert_eq!(
            get(&table, h, "GET", "/api/v1/z").unwrap().1.as_deref(),
            Some("/api/v1")
        );
        assert_eq!(get(&table, h, "GET", "/api/login").unwrap().1, None);
        assert_eq!(get(&table, h, "GET", "/api/v1/7/x").unwrap().1, None);
        assert_eq!(get(&table, h, "GET", "/other"), None);
    }

    #[test]
    fn any_match_of_a_route_selects_it() {
        let table = RouteTable::build(
            &routes("[{host: h, matches: [{path: {exact: /a}}, {method: DELETE}], service: a}]"),
            &[("a", "default")],
            true,
        );
        assert_eq!(get(&table, Some("h"), "GET", "/a").map(|m| m.0), route(0));
        assert_eq!(
            get(&table, Some("h"), "DELETE", "/b").map(|m| m.0),
            route(0)
        );
        assert_eq!(get(&table, Some("h"), "GET", "/b"), None);
    }

    #[test]
    fn query_parameters_are_decoded() {
        let table = RouteTable::build(
            &routes("[{host: h, matches: [{query_params: {q: 'a b/c', e: ''}}], service: a}]"),
            &[("a", "default")],
            true,
        );
        let hit = |uri| get(&table, Some("h"), "GET", uri).map(|m| m.0);
        assert_eq!(hit("/?q=a%20b%2Fc&e="), route(0));
        assert_eq!(hit("/?e&q=a+b/c"), route(0));
        assert_eq!(hit("/?q=a%20b%2Fc"), None);
        // the first value counts
        assert_eq!(hit("/?q=x&q=a+b/c&e"), None);
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%C3%A9"), "é");
    }

    #[test]
    fn patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("/users/*/orders", "/users/7/orders", true),
            ("/users/*/orders", "/users//orders", false),
            ("/users/*/orders", "/users/7/orders/1", false),
            ("/users/*/orders", "/users/7", false),
            ("/users/**", "/users", true),
            ("/users/**", "/users/", true),
            ("/users/**", "/users/a/b/c", true),
            ("/users/**", "/usersx", false),
            ("/*", "/", false),
            ("/*", "/a", true),
            ("/", "/", true),
            ("/", "/a", false),
            ("/**", "/", true),
            ("/**", "/a/b", true),
        ];
        for (pattern, path, want) in cases {
            let p = Pattern::parse(pattern).unwrap();
            assert_eq!(p.matches(path), *want, "{pattern} {path}");
        }
        for bad in ["users", "/a/**/b", "/a*", "/a//b", "/**x"] {
            assert!(Pattern::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(Pattern::parse("/users/*/orders").unwrap().literal_len(), 13);
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
