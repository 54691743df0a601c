//! `outbound:` app -> mesh: destination services and routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{HumanDuration, Located};

/// App -> mesh: route plain HTTP from the app to destination services.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Plain HTTP listener for the app (default `127.0.0.1:15001`). Accepts
    /// HTTP/1.1 and h2c with prior knowledge on the same port.
    #[serde(default = "super::defaults::outbound_listen")]
    pub listen: Located<SocketAddr>,
    /// Destination services by name. Each is reachable by the host names
    /// `NAME`, `NAME.NS`, `NAME.NS.svc` and `NAME.NS.svc.cluster.local`.
    #[serde(default)]
    pub services: BTreeMap<String, Located<DestinationConfig>>,
    /// Extra routes: host (and path prefix) to a service. Tried before the
    /// service names; the longest matching path prefix wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// One destination service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Inbound addresses of the service's sidecars (`IP:PORT`).
    pub endpoints: Vec<Located<SocketAddr>>,
    /// Identity the endpoints must prove: a service name (in `namespace`
    /// and this mesh's trust domain) or a whole `spiffe://` id. Default: the
    /// destination's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Located<String>>,
    /// Namespace of the destination (default: this sidecar's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `mtls` (Pilotfish sidecars, default) or `plaintext` (plain HTTP to
    /// a service outside the mesh).
    #[serde(default)]
    pub transport: Located<Transport>,
    /// HTTP version for `plaintext` endpoints: `auto` (the app's), `http1`
    /// or `http2` (h2c). The mesh link is always HTTP/2.
    #[serde(default)]
    pub protocol: Located<UpstreamProtocol>,
    /// Longest wait for TCP connect plus TLS handshake (default 1s).
    #[serde(default = "super::defaults::connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Longest wait for the response headers after the request is sent
    /// (default 15s, as Envoy's route timeout). Bodies may stream longer.
    #[serde(default = "super::defaults::response_timeout")]
    pub timeout: HumanDuration,
}

/// A route from a host (and optional path prefix) to a destination service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Host name to match, case-insensitive. Without a port it matches any
    /// port; with one (`api:8080`) only that port.
    pub host: Located<String>,
    /// Path prefix, matched by whole segments: `/users` matches `/users`
    /// and `/users/7`, not `/usersx`. Default `/`.
    #[serde(default = "super::defaults::path_prefix")]
    pub path_prefix: String,
    /// The destination service (a key of `outbound.services`).
    pub service: Located<String>,
}

/// HTTP version spoken to a plain HTTP server (the local app, or a
/// destination outside the mesh).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// The version the original caller used.
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2 over cleartext (prior knowledge).
    Http2,
}

impl UpstreamProtocol {
    /// The version to speak, given whether the calling app spoke HTTP/1.x
    /// (told by the outbound sidecar) and the version of the request as it
    /// arrived here.
    pub fn version(self, caller_spoke_http1: bool, arrived: http::Version) -> http::Version {
        match self {
            Self::Http1 => http::Version::HTTP_11,
            Self::Http2 => http::Version::HTTP_2,
            Self::Auto if !caller_spoke_http1 && arrived == http::Version::HTTP_2 => {
                http::Version::HTTP_2
            }
            Self::Auto => http::Version::HTTP_11,
        }
    }
}

/// How a destination's endpoints are reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Pilotfish sidecars: mTLS with the identity checked, one shared
    /// HTTP/2 connection per endpoint.
    #[default]
    Mtls,
    /// Plain HTTP to a service outside the mesh: nothing is encrypted and
    /// no identity is checked.
    Plaintext,
}
