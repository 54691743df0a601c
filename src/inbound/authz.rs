//! Authorization by caller identity, never by address: which workloads may
//! call the app, for which paths and methods, and which may open raw TCP
//! connections to which of its opaque ports. [`Policy::decide`] and
//! [`Policy::decide_tunnel`] are pure functions of the policy and the
//! caller's SPIFFE id with the method and path, or the port.

use http::Method;

use crate::config::{AuthorizationConfig, CallerPattern, DefaultPolicy};
use crate::identity::SpiffeId;

/// What the policy says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Admitted by the named rule, or by `default: allow-mesh` (`None`).
    Allow(Option<&'a str>),
    /// Refused.
    Deny(DenyReason),
}

/// Why a request was refused: the value of the `pilotfish-authz` header
/// and of the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No rule names this caller.
    NoRuleForCaller,
    /// Rules name the caller, but none for this path.
    PathNotAllowed,
    /// Rules name the caller and path, but not this method.
    MethodNotAllowed,
    /// Rules name the caller, but not this port (a raw TCP connection).
    PortNotAllowed,
    /// The caller is outside this sidecar's trust domain.
    ForeignTrustDomain,
}

impl DenyReason {
    /// The reason as a label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRuleForCaller => "no-rule-for-caller",
            Self::PathNotAllowed => "path-not-allowed",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::PortNotAllowed => "port-not-allowed",
            Self::ForeignTrustDomain => "foreign-trust-domain",
        }
    }
}

/// A compiled authorization policy.
#[derive(Debug, Clone)]
pub struct Policy {
    trust_domain: String,
    default: DefaultPolicy,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    callers: Vec<Caller>,
    paths: Vec<PathMatch>,
    methods: Vec<Method>,
    /// For raw TCP connections only: the ports it opens.
    ports: Vec<u16>,
}

#[derive(Debug, Clone)]
enum Caller {
    /// A mesh workload of this trust domain.
    Workload { namespace: String, service: String },
    /// A whole SPIFFE id.
    Id(String),
}

#[derive(Debug, Clone)]
enum PathMatch {
    Exact(String),
    /// Everything under this prefix, which ends with `/`.
    Prefix(String),
    Any,
}

impl Policy {
    /// Compiles a policy for a sidecar in `namespace` of `trust_domain`.
    /// No config means `default: allow-mesh` with no rules.
    pub fn new(
        config: Option<&AuthorizationConfig>,
        trust_domain: &str,
        namespace: &str,
    ) -> Result<Self, String> {
        let Some(config) = config else {
            return Ok(Self {
                trust_domain: trust_domain.to_owned(),
                default: DefaultPolicy::AllowMesh,
                rules: Vec::new(),
            });
        };
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let name = rule
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("rule-{}", i + 1));
                let callers = rule
                    .from
                    .iter()
                    .map(|c| compile_caller(c, namespace).map_err(|e| format!("{name}: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                if callers.is_empty() {
                    return Err(format!("{name}: `from` needs at least one caller"));
                }
                let paths = rule
                    .paths
                    .iter()
                    .map(|p| compile_path(p).map_err(|e| format!("{name}: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                let methods = rule
                    .methods
                    .iter()
                    .map(|m| compile_method(m).map_err(|e| format!("{name}: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Rule {
                    name,
                    callers,
                    paths,
                    methods,
                    ports: rule.ports.iter().map(|p| *p.get()).collect(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            default: *config.default,
            rules,
        })
    }

    /// Whether every identity of the trust domain gets in whatever it asks.
    pub fn admits_whole_mesh(&self) -> bool {
        self.default == DefaultPolicy::AllowMesh && self.rules.is_empty()
    }

    /// Decides one request. `path` should be normalized first
    /// ([`crate::http::path::normalize`]), so that `/public/../admin` is
    /// judged as `/admin`, as the app will see it.
    pub fn decide(&self, caller: &SpiffeId, method: &Method, path: &str) -> Decision<'_> {
        let in_mesh = caller.trust_domain() == self.trust_domain;
        // The most specific near miss, reported when nothing allows.
        let mut miss = DenyReason::NoRuleForCaller;
        for rule in &self.rules {
            if !rule.ports.is_empty() || !rule.callers.iter().any(|c| c.matches(caller, in_mesh)) {
                continue; // a rule with ports is for raw TCP only
            }
            if !rule.paths.is_empty() && !rule.paths.iter().any(|p| p.matches(path)) {
                miss = max_miss(miss, DenyReason::PathNotAllowed);
                continue;
            }
            if !rule.methods.is_empty() && !rule.methods.contains(method) {
                miss = max_miss(miss, DenyReason::MethodNotAllowed);
                continue;
            }
            return Decision::Allow(Some(&rule.name));
        }
        self.no_rule(in_mesh, miss)
    }
}

impl Policy {
    /// The decision when no rule admits the caller: the default, or the
    /// closest miss.
    fn no_rule(&self, in_mesh: bool, miss: DenyReason) -> Decision<'_> {
        match self.default {
            DefaultPolicy::AllowMesh if in_mesh => Decision::Allow(None),
            _ if !in_mesh => Decision::Deny(DenyReason::ForeignTrustDomain),
            _ => Decision::Deny(miss),
        }
    }

    /// Decides a raw TCP connection to `port` (one of `opaque_ports`): a
    /// rule admits it when it names the caller, has no paths or methods
    /// (those are HTTP's), and names the port or no port at all.
    pub fn decide_tunnel(&self, caller: &SpiffeId, port: u16) -> Decision<'_> {
        let in_mesh = caller.trust_domain() == self.trust_domain;
        let mut miss = DenyReason::NoRuleForCaller;
        for rule in &self.rules {
            if !rule.callers.iter().any(|c| c.matches(caller, in_mesh)) {
                continue;
            }
            let for_tcp = rule.paths.is_empty() && rule.methods.is_empty();
            if !for_tcp || !(rule.ports.is_empty() || rule.ports.contains(&port)) {
                miss = DenyReason::PortNotAllowed;
                continue;
            }
            return Decision::Allow(Some(&rule.name));
        }
        self.no_rule(in_mesh, miss)
    }
}

fn max_miss(a: DenyReason, b: DenyReason) -> DenyReason {
    let rank = |r| match r {
        DenyReason::MethodNotAllowed => 2,
        DenyReason::PathNotAllowed => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

impl Caller {
    fn matches(&self, caller: &SpiffeId, in_mesh: bool) -> bool {
        match self {
            Self::Id(pattern) => glob(pattern, caller.as_str()),
            Self::Workload { namespace, service } => {
                in_mesh
                    && caller
                        .namespace_and_service()
                        .is_some_and(|(ns, sa)| glob(namespace, ns) && glob(service, sa))
            }
        }
    }
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Self::Any => true,
        }
    }
}

/// A caller pattern on its own, as rate-limit overrides use it.
#[derive(Debug, Clone)]
pub struct CallerMatch {
    caller: Caller,
    trust_domain: String,
}

impl CallerMatch {
    /// Compiles `pattern` (validated with the config) for a sidecar in
    /// `namespace` of `trust_domain`.
    pub fn new(
        pattern: &CallerPattern,
        trust_domain: &str,
        namespace: &str,
    ) -> Result<Self, String> {
        Ok(Self {
            caller: compile_caller(pattern, namespace)?,
            trust_domain: trust_domain.to_owned(),
        })
    }

    /// Whether `caller` matches.
    pub fn matches(&self, caller: &SpiffeId) -> bool {
        self.caller
            .matches(caller, caller.trust_domain() == self.trust_domain)
    }
}

/// Checks one `from` entry (also used by config validation).
pub fn check_caller(pattern: &CallerPattern) -> Result<(), String> {
    compile_caller(pattern, "default").map(drop)
}

/// Checks one `paths` entry (also used by config validation).
pub fn check_path(path: &str) -> Result<(), String> {
    compile_path(path).map(drop)
}

/// Checks one `methods` entry (also used by config validation).
pub fn check_method(method: &str) -> Result<(), String> {
    compile_method(method).map(drop)
}

fn compile_method(method: &str) -> Result<Method, String> {
    let upper = method.to_ascii_uppercase();
    if upper.is_empty() || !upper.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
        return Err(format!("{method:?} is not an HTTP method"));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|_| format!("{method:?} is not an HTTP method"))
}

fn compile_caller(pattern: &CallerPattern, own_namespace: &str) -> Result<Caller, String> {
    match (&pattern.id, &pattern.service, &pattern.namespace) {
        (Some(id), None, None) if id.starts_with("spiffe://") => Ok(Caller::Id(id.clone())),
        (Some(id), None, None) => Err(format!("id {id:?} must start with spiffe://")),
        (Some(_), _, _) => Err("`id` cannot be combined with `service` or `namespace`".to_owned()),
        (None, None, None) => Err("a caller needs `service`, `namespace` or `id`".to_owned()),
        (None, service, namespace) => Ok(Caller::Workload {
            service: service.clone().unwrap_or_else(|| "*".to_owned()),
            namespace: namespace
                .clone()
                .unwrap_or_else(|| own_namespace.to_owned()),
        }),
    }
}

fn compile_path(path: &str) -> Result<PathMatch, String> {
    if path == "*" || path == "/*" {
        return Ok(PathMatch::Any);
    }
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    match path.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => Ok(PathMatch::Prefix(prefix.to_owned())),
        Some(_) => Err(format!(
            "path {path:?}: a prefix is written /dir/* ('*' only at the end, after '/')"
        )),
        None if path.contains('*') => Err(format!("path {path:?}: '*' is only allowed at the end")),
        None => Ok(PathMatch::Exact(path.to_owned())),
    }
}

/// `*` matches any run of characters except `/`; everything else matches
/// itself. In time linear in the text per `*` at worst: the text comes
/// from a peer's certificate, and trying every split for every `*`
/// (`*a*a*a*b`) would let it cost seconds.
pub fn glob(pattern: &str, text: &str) -> bool {
    // No `*` crosses a `/`, so segments pair up one to one.
    let mut patterns = pattern.split('/');
    let mut texts = text.split('/');
    loop {
        match (patterns.next(), texts.next()) {
            (None, None) => return true,
            (Some(p), Some(t)) if glob_segment(p.as_bytes(), t.as_bytes()) => {}
            _ => return false,
        }
    }
}

/// One segment: on a mismatch, only the last `*` seen takes one more
/// byte (what an earlier one could take, the later one can too). Bytes
/// are compared, yet a `*` ends on a character boundary: what follows it
/// in the pattern starts with a whole character.
fn glob_segment(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                last_star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match last_star {
                Some((star, taken)) => {
                    last_star = Some((star, taken + 1));
                    p = star + 1;
                    t = taken + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthorizationRule, Located};

    fn caller(
        service: Option<&str>,
        namespace: Option<&str>,
        id: Option<&str>,
    ) -> Located<CallerPattern> {
        Located::new(CallerPattern {
            service: service.map(str::to_owned),
            namespace: namespace.map(str::to_owned),
            id: id.map(str::to_owned),
        })
    }

    fn rule(
        name: &str,
        from: Vec<Located<CallerPattern>>,
        paths: &[&str],
        methods: &[&str],
    ) -> Located<AuthorizationRule> {
        Located::new(AuthorizationRule {
            name: Some(name.to_owned()),
            from,
            paths: paths
                .iter()
                .map(|p| Located::new((*p).to_owned()))
                .collect(),
            methods: methods
                .iter()
                .map(|m| Located::new((*m).to_owned()))
                .collect(),
            ports: Vec::new(),
        })
    }

    fn policy(default: DefaultPolicy, rules: Vec<Located<AuthorizationRule>>) -> Policy {
        let config = AuthorizationConfig {
            default: Located::new(default),
            rules,
        };
        Policy::new(Some(&config), "cluster.local", "shop").unwrap()
    }

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::for_service("cluster.local", ns, sa)
    }

    #[test]
    fn decisions() {
        let p = policy(
            DefaultPolicy::Deny,
            vec![
                rule(
                    "orders-read-users",
                    vec![caller(Some("orders"), None, None)],
                    &["/users", "/users/*"],
                    &["GET", "head"],
                ),
                rule(
                    "batch-anything",
                    vec![caller(None, Some("batch"), None)],
                    &[],
                    &[],
                ),
                rule(
                    "gateways",
                    vec![caller(
                        None,
                        None,
                        Some("spiffe://cluster.local/ns/*/sa/gateway"),
                    )],
                    &["/public/*"],
                    &[],
                ),
                rule(
                    "admin-health",
                    vec![caller(Some("admin-*"), None, None)],
                    &["/health"],
                    &["GET"],
                ),
            ],
        );
        let other_td = SpiffeId::parse("spiffe://evil.example/ns/shop/sa/orders").unwrap();
        let allow = |name| Decision::Allow(Some(name));
        let deny = Decision::Deny;
        let cases: Vec<(&str, SpiffeId, &str, &str, Decision)> = vec![
            (
                "allowed",
                id("shop", "orders"),
                "GET",
                "/users/7",
                allow("orders-read-users"),
            ),
            (
                "exact path",
                id("shop", "orders"),
                "GET",
                "/users",
                allow("orders-read-users"),
            ),
            (
                "method case-insensitive in config",
                id("shop", "orders"),
                "HEAD",
                "/users/7",
                allow("orders-read-users"),
            ),
            (
                "method mismatch",
                id("shop", "orders"),
                "POST",
                "/users/7",
                deny(DenyReason::MethodNotAllowed),
            ),
            (
                "path mismatch",
                id("shop", "orders"),
                "GET",
                "/admin",
                deny(DenyReason::PathNotAllowed),
            ),
            (
                "prefix is by segment",
                id("shop", "orders"),
                "GET",
                "/usersx",
                deny(DenyReason::PathNotAllowed),
            ),
            (
                "service in another namespace",
                id("other", "orders"),
                "GET",
                "/users/7",
                deny(DenyReason::NoRuleForCaller),
            ),
            (
                "unknown caller",
                id("shop", "payments"),
                "GET",
                "/users/7",
                deny(DenyReason::NoRuleForCaller),
            ),
            (
                "namespace rule",
                id("batch", "report"),
                "DELETE",
                "/anything",
                allow("batch-anything"),
            ),
            (
                "id wildcard",
                id("edge", "gateway"),
                "GET",
                "/public/x",
                allow("gateways"),
            ),
            (
                "id wildcard stays in a segment",
                SpiffeId::parse("spiffe://cluster.local/ns/a/b/sa/gateway").unwrap(),
                "GET",
                "/public/x",
                deny(DenyReason::NoRuleForCaller),
            ),
            (
                "service wildcard",
                id("shop", "admin-tools"),
                "GET",
                "/health",
                allow("admin-health"),
            ),
            (
                "foreign trust domain",
                other_td,
                "GET",
                "/users/7",
                deny(DenyReason::ForeignTrustDomain),
            ),
        ];
        for (what, caller, method, path, want) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(p.decide(&caller, &method, path), want, "{what}");
        }
    }

    #[test]
    fn defaults() {
        let deny_all = policy(DefaultPolicy::Deny, vec![]);
        assert_eq!(
            deny_all.decide(&id("shop", "orders"), &Method::GET, "/"),
            Decision::Deny(DenyReason::NoRuleForCaller)
        );
        assert!(!deny_all.admits_whole_mesh());

        let mesh = policy(DefaultPolicy::AllowMesh, vec![]);
        assert_eq!(
            mesh.decide(&id("any", "thing"), &Method::POST, "/x"),
            Decision::Allow(None)
        );
        assert!(mesh.admits_whole_mesh());
        let foreign = SpiffeId::parse("spiffe://other.org/ns/a/sa/b").unwrap();
        assert_eq!(
            mesh.decide(&foreign, &Method::GET, "/"),
            Decision::Deny(DenyReason::ForeignTrustDomain)
        );

        let absent = Policy::new(None, "cluster.local", "shop").unwrap();
        assert!(absent.admits_whole_mesh());
    }

    #[test]
    fn bad_rules_are_refused() {
        let bad = [
            rule("r", vec![caller(None, None, None)], &[], &[]),
            rule(
                "r",
                vec![caller(Some("a"), None, Some("spiffe://x/y"))],
                &[],
                &[],
            ),
            rule("r", vec![caller(None, None, Some("orders"))], &[], &[]),
            rule("r", vec![], &[], &[]),
            rule("r", vec![caller(Some("a"), None, None)], &["users"], &[]),
            rule("r", vec![caller(Some("a"), None, None)], &["/users*"], &[]),
            rule("r", vec![caller(Some("a"), None, None)], &["/a/*/b"], &[]),
            rule("r", vec![caller(Some("a"), None, None)], &[], &["GE T"]),
        ];
        for r in bad {
            let config = AuthorizationConfig {
                default: Located::new(DefaultPolicy::Deny),
                rules: vec![r.clone()],
            };
            assert!(
                Policy::new(Some(&config), "cluster.local", "shop").is_err(),
                "{r:?}"
            );
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(!glob("*", "a/b"));
        assert!(glob("admin-*", "admin-tools"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c", "ab/c"));
        assert!(glob("spiffe://td/ns/*/sa/*", "spiffe://td/ns/x/sa/y"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("é*", "éa"));
        assert!(glob("*é", "aé"));
        assert!(glob("a**b", "ab"));
        assert!(glob("", ""));
        assert!(!glob("", "a"));
        assert!(glob("a/*/c", "a//c"));
        assert!(!glob("a/*", "a/b/c"));
        assert!(glob("*-prod", "a-b-c-prod"));
        assert!(!glob("*-prod", "a-b-c-prodx"));
    }

    #[test]
    fn many_stars_against_a_long_name_are_cheap() {
        // Every split for every `*` would be about 40^7 tries.
        let name = "a".repeat(40);
        let started = std::time::Instant::now();
        assert!(!glob("*a*a*a*a*a*a*a*b", &name));
        assert!(glob("*a*a*a*a*a*a*a*", &name));
        let text = "a-".repeat(31) + "a";
        assert!(!glob("*-*-*-*-*-prod", &text));
        // Loose: the exponential matcher took over 10 s.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn raw_tcp_connections_are_decided_by_caller_and_port() {
        let mut cache = rule(
            "orders-cache",
            vec![caller(Some("orders"), None, None)],
            &[],
            &[],
        )
        .into_inner();
        cache.ports = vec![Located::new(6379)];
        let p = policy(
            DefaultPolicy::Deny,
            vec![
                Located::new(cache),
                rule(
                    "batch-anything",
                    vec![caller(None, Some("batch"), None)],
                    &[],
                    &[],
                ),
                rule(
                    "reports-http",
                    vec![caller(Some("reports"), None, None)],
                    &["/r/*"],
                    &[],
                ),
            ],
        );
        let allow = |name| Decision::Allow(Some(name));
        assert_eq!(
            p.decide_tunnel(&id("shop", "orders"), 6379),
            allow("orders-cache")
        );
        assert_eq!(
            p.decide_tunnel(&id("shop", "orders"), 5432),
            Decision::Deny(DenyReason::PortNotAllowed)
        );
        assert_eq!(
            p.decide_tunnel(&id("batch", "etl"), 5432),
            allow("batch-anything")
        );
        assert_eq!(
            p.decide_tunnel(&id("shop", "reports"), 6379),
            Decision::Deny(DenyReason::PortNotAllowed),
            "an HTTP rule opens no port"
        );
        assert_eq!(
            p.decide_tunnel(&id("shop", "payments"), 6379),
            Decision::Deny(DenyReason::NoRuleForCaller)
        );
        // A rule with ports admits no HTTP request.
        assert_eq!(
            p.decide(&id("shop", "orders"), &Method::GET, "/"),
            Decision::Deny(DenyReason::NoRuleForCaller)
        );
    }
}
