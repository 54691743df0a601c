//! Workload identity: service names and SPIFFE ids
//! (`spiffe://<trust-domain>/ns/<namespace>/sa/<service>`).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The name of a service: a DNS label (`users`, `order-history`), because it
/// becomes a host name, a SPIFFE path segment and a metric label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(Arc<str>);

/// Why a service name, namespace or trust domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is not valid: {why}")]
pub struct InvalidName {
    what: &'static str,
    value: String,
    why: &'static str,
}

impl ServiceName {
    /// Checks that `name` is a DNS label: 1-63 lowercase letters, digits and
    /// '-', starting with a letter and not ending with '-'.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        check_label("service name", name)?;
        Ok(Self(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ServiceName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Checks a Kubernetes namespace name (a DNS label).
pub fn check_namespace(ns: &str) -> Result<(), InvalidName> {
    check_label("namespace", ns)
}

/// Checks a SPIFFE trust domain: lowercase letters, digits, '.', '-', '_'.
pub fn check_trust_domain(td: &str) -> Result<(), InvalidName> {
    let bad = |why| {
        Err(InvalidName {
            what: "trust domain",
            value: td.to_owned(),
            why,
        })
    };
    if td.is_empty() || td.len() > 255 {
        return bad("it must have 1 to 255 characters");
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return bad("only lowercase letters, digits, '.', '-' and '_' are allowed");
    }
    Ok(())
}

fn check_label(what: &'static str, value: &str) -> Result<(), InvalidName> {
    let bad = |why| {
        Err(InvalidName {
            what,
            value: value.to_owned(),
            why,
        })
    };
    if value.is_empty() || value.len() > 63 {
        return bad("it must have 1 to 63 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only lowercase letters, digits and '-' are allowed");
    }
    if !value.as_bytes()[0].is_ascii_lowercase() {
        return bad("it must start with a letter");
    }
    if value.ends_with('-') {
        return bad("it must not end with '-'");
    }
    Ok(())
}

/// A SPIFFE id, `spiffe://<trust-domain>/<path>`; mesh workloads use the path
/// `ns/<namespace>/sa/<service>`. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId(Arc<str>);

/// Why a text is not a SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SPIFFE id (expected spiffe://<trust-domain>/<path>)")]
pub struct InvalidSpiffeId(String);

impl SpiffeId {
    const SCHEME: &'static str = "spiffe://";

    /// The mesh identity of a service: `spiffe://td/ns/ns/sa/name`.
    pub fn for_service(trust_domain: &str, namespace: &str, service: &str) -> Self {
        Self(format!("{}{trust_domain}/ns/{namespace}/sa/{service}", Self::SCHEME).into())
    }

    /// Parses any SPIFFE id (scheme, non-empty trust domain, non-empty path).
    pub fn parse(text: &str) -> Result<Self, InvalidSpiffeId> {
        let invalid = || InvalidSpiffeId(text.to_owned());
        let rest = text.strip_prefix(Self::SCHEME).ok_or_else(invalid)?;
        let (td, path) = rest.split_once('/').ok_or_else(invalid)?;
        if check_trust_domain(td).is_err()
            || path.is_empty()
            || path
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
            || text
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(invalid());
        }
        Ok(Self(text.into()))
    }

    /// The whole id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain (`cluster.local`).
    pub fn trust_domain(&self) -> &str {
        let rest = &self.0[Self::SCHEME.len()..];
        rest.split_once('/').map_or(rest, |(td, _)| td)
    }

    /// The namespace and service of a mesh id (`ns/<ns>/sa/<sa>`), if it is one.
    pub fn namespace_and_service(&self) -> Option<(&str, &str)> {
        let rest = &self.0[Self::SCHEME.len()..];
        let (_, path) = rest.split_once('/')?;
        let mut segs = path.split('/');
        match (
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_dns_labels() {
        for ok in ["users", "order-history", "a", "svc2"] {
            assert!(ServiceName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Users",
            "-users",
            "users-",
            "2fa",
            "us_ers",
            "a.b",
            &"x".repeat(64),
        ] {
            assert!(ServiceName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spiffe_ids() {
        let id = SpiffeId::for_service("cluster.local", "default", "users");
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/default/sa/users");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace_and_service(), Some(("default", "users")));
        assert_eq!(SpiffeId::parse(id.as_str()).unwrap(), id);

        let other = SpiffeId::parse("spiffe://example.org/workload/batch").unwrap();
        assert_eq!(other.trust_domain(), "example.org");
        assert_eq!(other.namespace_and_service(), None);

        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://",
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "spiffe://Cluster.Local/ns/a/sa/b",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/../sa/b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }
}
