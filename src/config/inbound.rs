//! `inbound:` mesh -> app, and who may call the app.

use std::net::SocketAddr;

use http::Method;
use serde::{Deserialize, Serialize};

use super::{HumanDuration, Located, UpstreamProtocol};

/// Mesh -> app: terminate mTLS, identify the caller, forward to the app.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// mTLS listener for other sidecars (default `0.0.0.0:15006`).
    #[serde(default = "super::defaults::inbound_listen")]
    pub listen: Located<SocketAddr>,
    /// Where the app listens for plain HTTP, normally on loopback.
    pub app: Located<SocketAddr>,
    /// HTTP version spoken to the app: `auto` (the version the calling app
    /// used), `http1` or `http2` (h2c with prior knowledge). Default `auto`.
    #[serde(default)]
    pub app_protocol: UpstreamProtocol,
    /// Longest wait for a TCP connection to the app (default 1s).
    #[serde(default = "super::defaults::app_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Idle connections to the app are closed after this (default 60s), or
    /// sooner when the app says so in `Keep-Alive: timeout=`.
    #[serde(default = "super::defaults::idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Longest wait for a TLS handshake from a peer (default 10s).
    #[serde(default = "super::defaults::handshake_timeout")]
    pub handshake_timeout: HumanDuration,
    /// Longest wait for the app's response headers (default 5m); over it
    /// the caller gets 504 `response-timeout`, and its sidecar counts a
    /// timeout. Callers' own timeouts (15s by default) usually end a slow
    /// request first; this bounds a hung app for callers that wait longer.
    #[serde(default = "super::defaults::app_timeout")]
    pub timeout: HumanDuration,
    /// Most connections to the app at once (default 1024, as Envoy's
    /// cluster); over it a request gets 503 `overloaded`.
    #[serde(default = "super::defaults::max_connections")]
    pub max_app_connections: Located<usize>,
    /// Most mesh connections the listener holds (default 10000); one more
    /// is closed at accept and counted.
    #[serde(default = "super::defaults::max_client_connections")]
    pub max_connections: Located<usize>,
    /// Ports on the app's host (its address in `app`) that callers may
    /// open raw TCP connections to through the mesh: a database, a broker
    /// beside or instead of an HTTP app. The authorization rules decide
    /// who may (rules with `ports`, or with no paths and methods).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opaque_ports: Vec<Located<u16>>,
    /// Who may call the app. Absent: any identity of the trust domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationConfig>,
}

/// Who may call the app, for which paths and methods.
///
/// Absent, every identity of the trust domain is admitted (as `default:
/// allow-mesh` with no rules); `pilotfish check` warns about that.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// What happens to a request no rule allows: `deny` (default) or
    /// `allow-mesh` (admit any identity of this trust domain).
    #[serde(default)]
    pub default: Located<DefaultPolicy>,
    /// Rules that allow requests; the first that matches wins.
    #[serde(default)]
    pub rules: Vec<Located<AuthorizationRule>>,
}

/// The decision for requests no rule allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Refuse with 403.
    #[default]
    Deny,
    /// Admit any identity of this sidecar's trust domain.
    AllowMesh,
}

/// One allow rule: callers, and optionally paths and methods.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRule {
    /// A name for logs, metrics and the 403 reason (default `rule-N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Callers this rule admits (at least one).
    pub from: Vec<Located<CallerPattern>>,
    /// Paths: exact (`/health`) or prefix (`/users/*` matches every path
    /// under `/users/`). Default: every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<Located<String>>,
    /// Methods (`GET`, `POST`, ...). Default: every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Located<String>>,
    /// For raw TCP connections (`inbound.opaque_ports`): the ports this
    /// rule opens. A rule with `ports` admits only such connections; a
    /// rule with neither paths, methods nor ports admits everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Located<u16>>,
}

/// A set of caller identities. `*` in a value matches any characters
/// except `/`. `service` alone means a service of this sidecar's namespace;
/// `namespace` alone, any service in that namespace; `id`, a whole SPIFFE
/// id (`spiffe://cluster.local/ns/*/sa/gateway`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallerPattern {
    /// Service (account) name pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Namespace pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Whole SPIFFE id pattern; not combined with the two above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

// The grammar of the values above, here with the schema: validation reports
// their errors, and `caller` and `inbound` compile what passes.

impl CallerPattern {
    /// Checks the pattern: an `id` alone (a whole SPIFFE id), or `service`
    /// and `namespace`, either of which may be left out.
    pub fn check(&self) -> Result<(), String> {
        match (&self.id, &self.service, &self.namespace) {
            (Some(id), None, None) if id.starts_with("spiffe://") => Ok(()),
            (Some(id), None, None) => Err(format!("id {id:?} must start with spiffe://")),
            (Some(_), _, _) => {
                Err("`id` cannot be combined with `service` or `namespace`".to_owned())
            }
            (None, None, None) => Err("a caller needs `service`, `namespace` or `id`".to_owned()),
            (None, _, _) => Ok(()),
        }
    }
}

/// Checks one `paths` entry of a rule: `*` (or `/*`), an exact path, or a
/// prefix written `/dir/*`.
pub fn check_path_pattern(path: &str) -> Result<(), String> {
    if path == "*" || path == "/*" {
        return Ok(());
    }
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    match path.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => Ok(()),
        Some(_) => Err(format!(
            "path {path:?}: a prefix is written /dir/* ('*' only at the end, after '/')"
        )),
        None if path.contains('*') => Err(format!("path {path:?}: '*' is only allowed at the end")),
        None => Ok(()),
    }
}

/// Reads one `methods` entry of a rule: a method name, in any case.
pub fn parse_method(method: &str) -> Result<Method, String> {
    let upper = method.to_ascii_uppercase();
    if upper.is_empty() || !upper.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
        return Err(format!("{method:?} is not an HTTP method"));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|_| format!("{method:?} is not an HTTP method"))
}
