//! Authorization by caller identity, never by address: which workloads may
//! call the app, for which paths and methods, and which may open raw TCP
//! connections to which of its opaque ports. [`Policy::decide`] and
//! [`Policy::decide_tunnel`] are pure functions of the policy and the
//! caller's SPIFFE id with the method and path, or the port.

use http::Method;

use crate::caller::Caller;
use crate::config::{AuthorizationConfig, DefaultPolicy, check_path_pattern, parse_method};
use crate::http::DenyReason;
use crate::identity::SpiffeId;

/// What the policy says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Admitted by the named rule, or by `default: allow-mesh` (`None`).
    Allow(Option<&'a str>),
    /// Refused.
    Deny(DenyReason),
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
                    .map(|c| Caller::compile(c, namespace).map_err(|e| format!("{name}: {e}")))
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
                    .map(|m| parse_method(m).map_err(|e| format!("{name}: {e}")))
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

/// Compiles one `paths` entry, checked by the config's grammar.
fn compile_path(path: &str) -> Result<PathMatch, String> {
    check_path_pattern(path)?;
    Ok(if path == "*" || path == "/*" {
        PathMatch::Any
    } else if let Some(prefix) = path.strip_suffix('*') {
        PathMatch::Prefix(prefix.to_owned())
    } else {
        PathMatch::Exact(path.to_owned())
    })
}

fn max_miss(a: DenyReason, b: DenyReason) -> DenyReason {
    let rank = |r| match r {
        DenyReason::MethodNotAllowed => 2,
        DenyReason::PathNotAllowed => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthorizationRule, CallerPattern, Located};

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
