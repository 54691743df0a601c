//! `gateway:` the mesh's entry point for clients from outside: a plain
//! HTTP and an HTTPS listener, JWT verification, routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{HumanDuration, Located, RouteConfig};

/// The edge gateway. Its requests go into the mesh over mTLS with this
/// process's identity, to the destinations of `outbound.services`, with
/// their retries, breakers and limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Plain HTTP listener (HTTP/1.1 and h2c), such as `0.0.0.0:8080`.
    /// Give this, `tls`, or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<Located<SocketAddr>>,
    /// HTTPS listener (HTTP/1.1 and HTTP/2 by ALPN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTlsConfig>,
    /// Most client connections each listener holds (default 10000); one
    /// more is closed at accept and counted.
    #[serde(default = "super::defaults::max_client_connections")]
    pub max_connections: Located<usize>,
    /// Proxies in front of the gateway that append to `X-Forwarded-For`
    /// (a cloud load balancer: 1). The client's address is the one that
    /// many entries from the right; with 0 (default) it is the peer's,
    /// and what clients send is not believed.
    #[serde(default)]
    pub trusted_hops: Located<u32>,
    /// Token verification. Absent: every route is public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// The routes, to `outbound.services`. Precedence as `outbound.routes`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// The gateway's HTTPS listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayTlsConfig {
    /// Address, such as `0.0.0.0:8443`.
    pub listen: Located<SocketAddr>,
    /// The server certificate chain (leaf first), as clients see it;
    /// reloaded when the file changes.
    pub cert: Located<PathBuf>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key: Located<PathBuf>,
}

/// How tokens are verified and what the app is told about their subject.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` tokens must carry (default: not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `aud` values accepted; a token must name one (default: not
    /// checked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Clock skew allowed for `exp` and `nbf` (default 60s).
    #[serde(default = "super::defaults::jwt_leeway")]
    pub leeway: HumanDuration,
    /// Where the keys come from; files are read again when they change.
    pub keys: Vec<Located<JwtKeySource>>,
    /// How often a `jwks_url` is fetched again (default 5m). A failed fetch
    /// keeps the keys last fetched and is retried sooner (from 1s,
    /// doubling up to this).
    #[serde(default = "super::defaults::jwks_refresh")]
    pub jwks_refresh: Located<HumanDuration>,
    /// The claim holding the roles (a list, or one space-separated
    /// string), sent to the app in `x-user-roles` (default `roles`).
    #[serde(default = "super::defaults::roles_claim")]
    pub roles_claim: String,
    /// The claim holding the scopes (default `scope`, as RFC 8693).
    #[serde(default = "super::defaults::scopes_claim")]
    pub scopes_claim: String,
    /// More claims sent to the app: claim name to header name
    /// (`email: x-user-email`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claim_headers: BTreeMap<String, String>,
    /// A query parameter a token may come in, for clients that cannot set
    /// a header (WebSockets in browsers). Default: only
    /// `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_param: Option<String>,
}

/// One source of verification keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum JwtKeySource {
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519).
    Pem(PathBuf),
    /// A file holding an HMAC secret (HS256/384/512), 32 bytes at least.
    SecretFile(PathBuf),
    /// A JWKS document (RFC 7517) in a file.
    JwksFile(PathBuf),
    /// A JWKS document at an `http://` or `https://` URL.
    JwksUrl(String),
}

impl JwtKeySource {
    /// The file the keys are read from, if they are in one.
    pub fn file(&self) -> Option<&PathBuf> {
        match self {
            Self::Pem(path) | Self::SecretFile(path) | Self::JwksFile(path) => Some(path),
            Self::JwksUrl(_) => None,
        }
    }

    /// The file, to change it (relative paths are made the config's).
    pub fn file_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            Self::Pem(path) | Self::SecretFile(path) | Self::JwksFile(path) => Some(path),
            Self::JwksUrl(_) => None,
        }
    }
}
