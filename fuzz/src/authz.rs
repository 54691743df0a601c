//! `inbound` authorization: `Policy::new` and `Policy::decide` for a caller's
//! SPIFFE id, method and path; the config's grammar of rules
//! (`CallerPattern::check`, `check_path_pattern`, `parse_method`: config
//! validation) and `caller::CallerMatch` (rate-limit overrides), against a
//! model of the documented rules (with its own `*` matcher, independent of
//! `caller::glob`).
//!
//! Input: lines. `td DOMAIN`, `ns NAMESPACE` and `default deny|allow-mesh`
//! set the sidecar; `rule [NAME]` starts a rule, and `from service=S
//! namespace=N id=I` (any of the three), `path P` and `method M` add to
//! it; `? CALLER METHOD TARGET` is a request.

use http::Method;
use pilotfish::caller::CallerMatch;
use pilotfish::config::{
    AuthorizationConfig, AuthorizationRule, CallerPattern, DefaultPolicy, Located,
    check_path_pattern, parse_method,
};
use pilotfish::http::DenyReason;
use pilotfish::http::path::normalize;
use pilotfish::identity::SpiffeId;
use pilotfish::inbound::{Decision, Policy};

use super::input::{from_yaml, lines, text};

/// Checks one input.
pub fn run(data: &[u8]) {
    let mut trust_domain = "cluster.local".to_owned();
    let mut namespace = "default".to_owned();
    let mut default = DefaultPolicy::Deny;
    let mut rules: Vec<AuthorizationRule> = Vec::new();
    let mut requests = Vec::new();
    for line in lines(data).filter_map(text) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rule = rules.last_mut();
        match (word, rule) {
            ("td", _) => trust_domain = rest.to_owned(),
            ("ns", _) => namespace = rest.to_owned(),
            ("default", _) => {
                default = match rest {
                    "allow-mesh" => DefaultPolicy::AllowMesh,
                    _ => DefaultPolicy::Deny,
                };
            }
            ("rule", _) => {
                // Fields not set here keep their defaults (the schema grows).
                let mut rule: AuthorizationRule = from_yaml("from: []");
                rule.name = (!rest.is_empty()).then(|| rest.to_owned());
                rules.push(rule);
            }
            ("from", Some(rule)) => {
                let mut pattern: CallerPattern = from_yaml("{}");
                for kv in rest.split(' ') {
                    match kv.split_once('=') {
                        Some(("service", v)) => pattern.service = Some(v.to_owned()),
                        Some(("namespace", v)) => pattern.namespace = Some(v.to_owned()),
                        Some(("id", v)) => pattern.id = Some(v.to_owned()),
                        _ => {}
                    }
                }
                rule.from.push(Located::new(pattern));
            }
            ("path", Some(rule)) => rule.paths.push(Located::new(rest.to_owned())),
            ("method", Some(rule)) => rule.methods.push(Located::new(rest.to_owned())),
            ("?", _) => requests.push(rest),
            _ => {}
        }
    }
    let mut config: AuthorizationConfig = from_yaml("{}");
    config.default = Located::new(default);
    config.rules = rules.into_iter().map(Located::new).collect();
    let policy = Policy::new(Some(&config), &trust_domain, &namespace);
    // The policy compiles exactly when config validation accepts it.
    let valid = config.rules.iter().all(|rule| {
        !rule.from.is_empty()
            && rule.from.iter().all(|c| c.check().is_ok())
            && rule.paths.iter().all(|p| check_path_pattern(p).is_ok())
            && rule.methods.iter().all(|m| parse_method(m).is_ok())
    });
    assert_eq!(policy.is_ok(), valid, "{:?}", policy.err());
    let Ok(policy) = policy else {
        return;
    };
    for request in requests {
        let mut parts = request.splitn(3, ' ');
        let (Some(caller), Some(method), Some(target)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(caller), Ok(method)) = (
            SpiffeId::parse(caller),
            Method::from_bytes(method.as_bytes()),
        ) else {
            continue;
        };
        let Ok(pq) = http::uri::PathAndQuery::try_from(target) else {
            continue;
        };
        let Some(path) = normalize(pq.path()) else {
            continue; // refused with 400 before any rule
        };
        let decision = policy.decide(&caller, &method, &path);
        check_decision(
            &config,
            &trust_domain,
            &namespace,
            &caller,
            &method,
            &path,
            &decision,
        );
        // What was judged is what the app acts on: judging the normal form
        // again (as a second proxy, or the app's own router, would) gives
        // the same answer.
        let again = normalize(&path).expect("a normal path normalizes");
        assert_eq!(
            policy.decide(&caller, &method, &again),
            decision,
            "{target:?} is judged as {path:?} but {again:?} as well"
        );
    }
}

/// The decision agrees with the rules as documented: the first rule whose
/// caller, path and method match allows; else `allow-mesh` admits the
/// trust domain; else the most specific near miss is the reason.
#[allow(clippy::too_many_arguments)]
fn check_decision(
    config: &AuthorizationConfig,
    trust_domain: &str,
    namespace: &str,
    caller: &SpiffeId,
    method: &Method,
    path: &str,
    decision: &Decision<'_>,
) {
    let in_mesh = caller.trust_domain() == trust_domain;
    let mut miss = DenyReason::NoRuleForCaller;
    let mut want = None;
    for (i, rule) in config.rules.iter().enumerate() {
        let name = rule
            .name
            .clone()
            .unwrap_or_else(|| format!("rule-{}", i + 1));
        if !rule
            .from
            .iter()
            .any(|c| caller_matches(c, trust_domain, namespace, caller))
        {
            continue;
        }
        if !rule.paths.is_empty() && !rule.paths.iter().any(|p| path_matches(p, path)) {
            if miss != DenyReason::MethodNotAllowed {
                miss = DenyReason::PathNotAllowed;
            }
            continue;
        }
        if !rule.methods.is_empty()
            && !rule
                .methods
                .iter()
                .any(|m| m.to_ascii_uppercase() == method.as_str())
        {
            miss = DenyReason::MethodNotAllowed;
            continue;
        }
        want = Some(name);
        break;
    }
    match (decision, want) {
        (Decision::Allow(Some(got)), Some(want)) => assert_eq!(*got, want),
        (Decision::Allow(None), None) => {
            assert!(in_mesh && *config.default == DefaultPolicy::AllowMesh)
        }
        (Decision::Deny(reason), None) => {
            let allow_mesh = *config.default == DefaultPolicy::AllowMesh;
            assert!(!(in_mesh && allow_mesh), "allow-mesh refused {caller}");
            let want = if in_mesh {
                miss
            } else {
                DenyReason::ForeignTrustDomain
            };
            assert_eq!(*reason, want);
        }
        (got, want) => panic!("{caller} {method} {path}: decided {got:?}, the rules say {want:?}"),
    }
}

/// A caller pattern as documented: `*` matches within one segment;
/// `service`/`namespace` only match this trust domain's mesh ids.
fn caller_matches(
    pattern: &CallerPattern,
    trust_domain: &str,
    namespace: &str,
    caller: &SpiffeId,
) -> bool {
    let by_rule = match (&pattern.id, &pattern.service, &pattern.namespace) {
        (Some(id), None, None) => glob(id, caller.as_str()),
        (None, service, ns) => {
            caller.trust_domain() == trust_domain
                && caller.namespace_and_service().is_some_and(|(n, s)| {
                    glob(ns.as_deref().unwrap_or(namespace), n)
                        && glob(service.as_deref().unwrap_or("*"), s)
                })
        }
        _ => unreachable!("a valid policy"),
    };
    // Rate-limit overrides match callers with the same patterns.
    let compiled = CallerMatch::new(pattern, trust_domain, namespace).expect("valid");
    assert_eq!(compiled.matches(caller), by_rule, "{pattern:?} {caller}");
    by_rule
}

/// `*` or `/*`: any path; `/dir/*`: everything under `/dir/`; else exact.
fn path_matches(rule: &str, path: &str) -> bool {
    match rule {
        "*" | "/*" => true,
        _ => match rule.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == rule,
        },
    }
}

/// `*` matches any run of characters but `/`; the rest matches itself.
/// (Dynamic programming: linear in the text for each pattern character.)
fn glob(pattern: &str, text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    // matched[j]: the pattern so far matches the first j characters.
    let mut matched = vec![false; text.len() + 1];
    matched[0] = true;
    for p in pattern.chars() {
        let mut next = vec![false; text.len() + 1];
        if p == '*' {
            for j in 0..=text.len() {
                next[j] = matched[j] || (j > 0 && next[j - 1] && text[j - 1] != '/');
            }
        } else {
            for j in 1..=text.len() {
                next[j] = matched[j - 1] && text[j - 1] == p;
            }
        }
        matched = next;
    }
    matched[text.len()]
}
