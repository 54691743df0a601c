//! `outbound:` app -> mesh: destination services and routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{
    BreakerConfig, FallbackConfig, HumanDuration, LimitsConfig, LoadBalancer, Located,
    OutlierConfig, RetryBudgetConfig, RetryConfig, RouteConfig,
};

/// App -> mesh: route plain HTTP from the app to destination services.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Plain HTTP listener for the app (default `127.0.0.1:15001`). Accepts
    /// HTTP/1.1 and h2c with prior knowledge on the same port.
    #[serde(default = "super::defaults::outbound_listen")]
    pub listen: Located<SocketAddr>,
    /// Most app connections the listener holds (default 10000); one more
    /// is closed at accept and counted.
    #[serde(default = "super::defaults::max_client_connections")]
    pub max_connections: Located<usize>,
    /// Destination services by name. Each is reachable by the host names
    /// `NAME`, `NAME.NS`, `NAME.NS.svc` and `NAME.NS.svc.cluster.local`.
    #[serde(default)]
    pub services: BTreeMap<String, Located<DestinationConfig>>,
    /// Extra routes (`route.rs`): host, path, method, headers and query to
    /// a service, weighted services, a redirect or a fixed answer. Tried
    /// before the service names, in the precedence `route.rs` gives.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// For connections captured to this listener (redirected by iptables,
    /// with an original destination): how long to wait for the app's
    /// first bytes before carrying the connection as opaque TCP (default
    /// 1s). HTTP/1, HTTP/2 and TLS are told apart by those bytes.
    #[serde(default = "super::defaults::detect_timeout")]
    pub detect_timeout: Located<HumanDuration>,
    /// For captured connections: original destination ports carried as
    /// opaque TCP at once, without waiting for first bytes: protocols
    /// where the server speaks first (SMTP, MySQL) and databases. Default,
    /// as Linkerd's: 25, 587, 3306, 4444, 5432, 6379, 9300, 11211.
    #[serde(default = "super::defaults::opaque_ports")]
    pub opaque_ports: Vec<Located<u16>>,
    /// For captured connections to an address no destination has:
    /// `passthrough` (default, as Istio's `ALLOW_ANY` and Linkerd) carries
    /// them there as they are (TLS and other raw TCP as bytes, HTTP whose
    /// host no route knows as plain HTTP); `refuse` (Istio's
    /// `REGISTRY_ONLY`) closes such connections and answers such requests
    /// 503 `no-route`, so the app reaches only what the config names.
    #[serde(default)]
    pub unknown_destinations: UnknownDestinations,
}

/// What captured traffic to an address no destination has gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownDestinations {
    /// Carried to that address as it is, outside the mesh.
    #[default]
    Passthrough,
    /// Refused.
    Refuse,
}

/// One destination service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Inbound addresses of the service's sidecars (`IP:PORT`). Give these
    /// or `dns`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Located<SocketAddr>>,
    /// A DNS name and port (`users.shop.svc.cluster.local:15006`) whose
    /// A/AAAA answers are the endpoints, as a Kubernetes headless Service
    /// gives; re-resolved every `dns_refresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Located<String>>,
    /// How often `dns` is resolved again (default 5s). A failed lookup
    /// keeps the endpoints last known.
    #[serde(default = "super::defaults::dns_refresh")]
    pub dns_refresh: Located<HumanDuration>,
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
    /// HTTP version to the endpoints. `plaintext`: `auto` (the app's),
    /// `http1` or `http2` (h2c). `mtls`, the link between the sidecars:
    /// `auto` or `http2` (one multiplexed HTTP/2 connection, the default)
    /// or `http1` (pooled HTTP/1.1 keep-alive connections; an HTTP/2
    /// caller's requests go as HTTP/1.1). `opaque`: not HTTP at all (a
    /// database, a broker): each connection is carried as raw bytes, over
    /// the mTLS link to the far sidecar (`mtls`) or straight to an
    /// endpoint (`plaintext`).
    #[serde(default)]
    pub protocol: Located<UpstreamProtocol>,
    /// For `protocol: opaque`: a local address the app connects to for
    /// this destination (`127.0.0.1:6379`); every connection to it is
    /// carried to one of the destination's endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<Located<SocketAddr>>,
    /// For `protocol: opaque` over `mtls`: the port on the far sidecar's
    /// host the connections go to (one of its `inbound.opaque_ports`).
    /// Default: the port of `listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Located<u16>>,
    /// Longest wait for TCP connect plus TLS handshake (default 1s).
    #[serde(default = "super::defaults::connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Longest wait from the request until the response headers, all
    /// attempts included (default 15s, as Envoy's route timeout). Bodies may
    /// stream longer. An incoming `grpc-timeout` shortens it.
    #[serde(default = "super::defaults::response_timeout")]
    pub timeout: HumanDuration,
    /// Longest wait for one attempt (default: none, only `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<HumanDuration>,
    /// Idle pooled connections are closed after this (default 60s), or
    /// sooner when the upstream says so in `Keep-Alive: timeout=`.
    #[serde(default = "super::defaults::idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// `peak-ewma` (default), `least-request` or `round-robin`.
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// When and how often to retry.
    #[serde(default)]
    pub retries: RetryConfig,
    /// How many retries the destination can take.
    #[serde(default)]
    pub retry_budget: RetryBudgetConfig,
    /// Concurrency limits (Envoy's circuit breakers).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Per-endpoint ejection after failures in a row.
    #[serde(default)]
    pub outlier_detection: OutlierConfig,
    /// The error-rate breaker (off unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerConfig>,
    /// What requests get while the breaker is open (default: 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackConfig>,
}

impl Default for DestinationConfig {
    /// No endpoints, every other field at its default.
    fn default() -> Self {
        Self {
            listen: None,
            port: None,
            endpoints: Vec::new(),
            dns: None,
            dns_refresh: super::defaults::dns_refresh(),
            identity: None,
            namespace: None,
            transport: Located::default(),
            protocol: Located::default(),
            connect_timeout: super::defaults::connect_timeout(),
            timeout: super::defaults::response_timeout(),
            per_try_timeout: None,
            idle_timeout: super::defaults::idle_timeout(),
            load_balancer: LoadBalancer::default(),
            retries: RetryConfig::default(),
            retry_budget: RetryBudgetConfig::default(),
            limits: LimitsConfig::default(),
            outlier_detection: OutlierConfig::default(),
            breaker: None,
            fallback: None,
        }
    }
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
    /// Not HTTP: raw bytes, one connection at a time (destinations only).
    Opaque,
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
            Self::Auto | Self::Opaque => http::Version::HTTP_11,
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
