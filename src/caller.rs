//! Caller patterns: the `from` entries of authorization rules and the
//! `caller` of rate-limit overrides, compiled once and matched against the
//! SPIFFE id a peer proved in its handshake. The grammar is the config's
//! ([`CallerPattern::check`]); the matching is here, below both inbound
//! authorization and rate limits, which share it.

use crate::config::CallerPattern;
use crate::identity::SpiffeId;

/// A compiled caller pattern.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A mesh workload of this trust domain.
    Workload {
        /// Namespace pattern.
        namespace: String,
        /// Service (account) name pattern.
        service: String,
    },
    /// A whole SPIFFE id.
    Id(String),
}

impl Caller {
    /// Compiles `pattern` for a sidecar in `own_namespace` (the namespace
    /// of a `service` given alone).
    pub fn compile(pattern: &CallerPattern, own_namespace: &str) -> Result<Self, String> {
        pattern.check()?;
        Ok(match &pattern.id {
            Some(id) => Self::Id(id.clone()),
            None => Self::Workload {
                service: pattern.service.clone().unwrap_or_else(|| "*".to_owned()),
                namespace: pattern
                    .namespace
                    .clone()
                    .unwrap_or_else(|| own_namespace.to_owned()),
            },
        })
    }

    /// Whether `caller` matches; `in_mesh`: it is of this sidecar's trust
    /// domain (a `service`/`namespace` pattern names only those).
    pub fn matches(&self, caller: &SpiffeId, in_mesh: bool) -> bool {
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
            caller: Caller::compile(pattern, namespace)?,
            trust_domain: trust_domain.to_owned(),
        })
    }

    /// Whether `caller` matches.
    pub fn matches(&self, caller: &SpiffeId) -> bool {
        self.caller
            .matches(caller, caller.trust_domain() == self.trust_domain)
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
}
