//! The sidecar's configuration: typed, documented data read from YAML.
//!
//! Every field has a safe default except the few that only the operator can
//! know (`service`, `tls`, the app address, destination endpoints), so a
//! short file runs. `config/reference.yaml` documents every field.
//! [`load`] reads and validates a file; errors carry `FILE:LINE:COLUMN`.

mod gateway;
mod inbound;
mod load;
mod outbound;
mod rate_limit;
mod redact;
mod resilience;
mod route;
mod telemetry;
mod tls;
mod validate;
mod values;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::identity::{ServiceName, SpiffeId};

pub use gateway::{GatewayConfig, GatewayTlsConfig, JwtConfig, JwtKeySource};
pub use inbound::{
    AuthorizationConfig, AuthorizationRule, CallerPattern, DefaultPolicy, InboundConfig,
    check_path_pattern, parse_method,
};
pub use load::{
    CheckReport, ConfigError, ConfigErrors, FileCheck, check_files, digest, load, load_file,
    parse_str,
};
pub use outbound::{
    DestinationConfig, OutboundConfig, Transport, UnknownDestinations, UpstreamProtocol,
};
pub use rate_limit::{
    GlobalLimitConfig, LimitDirection, LimitKey, LimitOverride, OnFailure, RateLimitConfig,
};
pub use resilience::{
    BreakerConfig, FallbackConfig, GrpcCode, LimitsConfig, LoadBalancer, OutlierConfig,
    RetryBudgetConfig, RetryConfig, RetryOn,
};
pub use route::{
    BackendConfig, CorsConfig, DirectResponse, HeaderModifier, MatchConfig, PathMatch, PathRewrite,
    Redirect, RouteAuth, RouteConfig, StickyConfig, UrlRewrite,
};
pub use telemetry::{
    AccessLogConfig, AccessLogFormat, OtlpConfig, OtlpProtocol, PropagationFormat, RequestIdConfig,
    TracingConfig, parse_correlation_header,
};
pub use tls::{TlsConfig, TlsVersion};
pub use validate::{expected_identity, warnings};
pub use values::{ByteSize, HumanDuration, Located, Position};

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The service this sidecar stands beside. Its identity is
    /// `spiffe://{trust_domain}/ns/{namespace}/sa/{service}`.
    pub service: Located<ServiceName>,
    /// Namespace of the service (default `default`).
    #[serde(default = "defaults::namespace")]
    pub namespace: Located<String>,
    /// SPIFFE trust domain of the mesh (default `cluster.local`).
    #[serde(default = "defaults::trust_domain")]
    pub trust_domain: Located<String>,
    /// Certificate files of this workload and the mesh CA. Required for
    /// `inbound` and for `mtls` destinations, that is, in any mesh use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The admin listener: health, metrics, effective config.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Mesh -> app. Absent: this sidecar accepts no mesh traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Located<InboundConfig>>,
    /// App -> mesh. Absent: the app cannot call other services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundConfig>,
    /// Clients from outside -> mesh: the edge gateway. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayConfig>,
    /// HTTP protocol limits shared by every listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// What happens on SIGTERM.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Threads of the async runtime.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Diagnostic logs.
    #[serde(default)]
    pub log: LogConfig,
    /// Trace context propagation and span export.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// One line per request on stdout.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// `x-request-id` and the correlation id.
    #[serde(default)]
    pub request_ids: RequestIdConfig,
    /// Token-bucket rate limits, inbound and outbound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitConfig>,
}

impl Config {
    /// This sidecar's own SPIFFE id.
    pub fn identity(&self) -> SpiffeId {
        SpiffeId::for_service(&self.trust_domain, &self.namespace, self.service.as_str())
    }
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of `/live`, `/ready`, `/metrics`, `/config` (default
    /// `127.0.0.1:9901`; keep it on loopback or a pod-internal address).
    #[serde(default = "defaults::admin_listen")]
    pub listen: Located<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: defaults::admin_listen(),
        }
    }
}

/// HTTP protocol limits, the same for HTTP/1 and HTTP/2.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request header block (default 64KiB, like Envoy's 60 KiB;
    /// hyper's HTTP/2 default of 16 KiB broke large cookies). Over it: 431.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: Located<ByteSize>,
    /// Most request header fields (default 100, as Envoy). Over it: 431.
    #[serde(default = "defaults::max_headers")]
    pub max_headers: Located<usize>,
    /// An HTTP/1.1 client must send a request's headers within this of
    /// its first byte (of the connection's start, for the first request)
    /// (default 10s). Over it: the connection is closed.
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// A client connection with no request in flight for this long is
    /// closed (HTTP/1.1) or sent GOAWAY (HTTP/2) (default 60s).
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// A client connection older than this is asked to close after its
    /// requests in flight (HTTP/1.1: `Connection: close`; HTTP/2: GOAWAY),
    /// so long-lived clients spread over new endpoints (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_age: Option<HumanDuration>,
    /// A request or response body that moves no data for this long is cut
    /// (default 5m, as Envoy's stream idle timeout).
    #[serde(default = "defaults::body_idle_timeout")]
    pub body_idle_timeout: HumanDuration,
    /// A tunnel (an upgraded connection such as a WebSocket, a CONNECT
    /// tunnel, an opaque TCP connection) in which no byte moves for this
    /// long is closed (default 1h, as Envoy's TCP proxy).
    #[serde(default = "defaults::tunnel_idle_timeout")]
    pub tunnel_idle_timeout: HumanDuration,
    /// HTTP/2 clients are pinged this often while connected, and dropped
    /// when a ping goes unanswered for as long (default 20s), so a peer
    /// that vanished without a FIN is noticed.
    #[serde(default = "defaults::h2_keepalive")]
    pub h2_keepalive: HumanDuration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: defaults::max_header_bytes(),
            max_headers: defaults::max_headers(),
            header_read_timeout: defaults::header_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_connection_age: None,
            body_idle_timeout: defaults::body_idle_timeout(),
            tunnel_idle_timeout: defaults::tunnel_idle_timeout(),
            h2_keepalive: defaults::h2_keepalive(),
        }
    }
}

/// Shutdown behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long in-flight requests may run before the
    /// sidecar exits anyway (default 30s).
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: HumanDuration,
    /// After SIGTERM, how long the outbound listener keeps taking the
    /// app's calls while the app finishes its own requests, when the app
    /// and the sidecar are stopped together (Compose, a pod without native
    /// sidecars). Ends early once the app is gone: `inbound.app` refuses
    /// connections, or, with no inbound side, the app holds no connection
    /// to the listener (default 5s, as Istio's termination drain).
    #[serde(default = "defaults::outbound_grace")]
    pub outbound_grace: HumanDuration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: defaults::drain_timeout(),
            outbound_grace: defaults::outbound_grace(),
        }
    }
}

/// Async runtime.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads (default 1: a sidecar shares its pod's CPU with the
    /// app, and one thread avoids cross-thread wake-ups).
    #[serde(default = "defaults::worker_threads")]
    pub worker_threads: Located<usize>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            worker_threads: defaults::worker_threads(),
        }
    }
}

/// Diagnostic logs (to stderr).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a `tracing` filter such
    /// as `info,pilotfish::outbound=debug` (default `info`). The
    /// `PILOTFISH_LOG` environment variable overrides it.
    #[serde(default = "defaults::log_level")]
    pub level: Located<String>,
    /// `json` (one object per line) or `text` (default `json`).
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: defaults::log_level(),
            format: LogFormat::default(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// Default values, each with its reason where it is not obvious.
mod defaults {
    use super::*;

    pub fn namespace() -> Located<String> {
        Located::new("default".to_owned())
    }
    pub fn trust_domain() -> Located<String> {
        Located::new("cluster.local".to_owned())
    }
    pub fn admin_listen() -> Located<SocketAddr> {
        Located::new(SocketAddr::from(([127, 0, 0, 1], 9901)))
    }
    pub fn inbound_listen() -> Located<SocketAddr> {
        Located::new(SocketAddr::from(([0, 0, 0, 0], 15006)))
    }
    pub fn outbound_listen() -> Located<SocketAddr> {
        Located::new(SocketAddr::from(([127, 0, 0, 1], 15001)))
    }
    /// The app is on loopback: if it does not answer a SYN in 1s it is down.
    pub fn app_connect_timeout() -> HumanDuration {
        HumanDuration::from_secs(1)
    }
    pub fn handshake_timeout() -> HumanDuration {
        HumanDuration::from_secs(10)
    }
    /// Linkerd uses 1s for outbound connects; it bounds how long a request
    /// waits on a dead endpoint.
    pub fn connect_timeout() -> HumanDuration {
        HumanDuration::from_secs(1)
    }
    pub fn response_timeout() -> HumanDuration {
        HumanDuration::from_secs(15)
    }
    pub fn idle_timeout() -> HumanDuration {
        HumanDuration::from_secs(60)
    }
    pub fn dns_refresh() -> Located<HumanDuration> {
        Located::new(HumanDuration::from_secs(5))
    }
    pub fn path_prefix() -> String {
        "/".to_owned()
    }
    pub fn any_host() -> Located<String> {
        Located::new(crate::authority::ANY_HOST.to_owned())
    }
    pub fn weight() -> Located<u32> {
        Located::new(1)
    }
    pub fn redirect_status() -> u16 {
        302
    }
    pub fn text_plain() -> String {
        "text/plain; charset=utf-8".to_owned()
    }
    pub fn cors_methods() -> Vec<String> {
        ["GET", "HEAD", "POST"].map(String::from).to_vec()
    }
    /// The Fetch standard's default when `Access-Control-Max-Age` is absent.
    pub fn cors_max_age() -> HumanDuration {
        HumanDuration::from_secs(5)
    }
    /// RFC 7519 §4.1.4 allows "a few minutes"; Envoy's jwt_authn and
    /// Istio use 60s.
    pub fn jwt_leeway() -> HumanDuration {
        HumanDuration::from_secs(60)
    }
    /// Envoy's remote JWKS cache lasts 5 minutes by default.
    pub fn jwks_refresh() -> Located<HumanDuration> {
        Located::new(HumanDuration::from_secs(300))
    }
    pub fn roles_claim() -> String {
        "roles".to_owned()
    }
    pub fn scopes_claim() -> String {
        "scope".to_owned()
    }
    pub fn max_header_bytes() -> Located<ByteSize> {
        Located::new(ByteSize::kib(64))
    }
    pub fn max_headers() -> Located<usize> {
        Located::new(100)
    }
    /// Bounds clients that trickle their headers (slow loris): nginx
    /// allows 60s (client_header_timeout), HAProxy's guide 10s (timeout
    /// http-request), Envoy nothing by default; a client on loopback or a
    /// sidecar sends its headers in one write.
    pub fn header_read_timeout() -> HumanDuration {
        HumanDuration::from_secs(10)
    }
    /// As Envoy's stream idle timeout: long enough for streams that are
    /// quiet by nature (server-sent events, gRPC streams).
    pub fn body_idle_timeout() -> HumanDuration {
        HumanDuration::from_secs(300)
    }
    /// Linkerd waits 10s, which server-speaks-first protocols pay on every
    /// connection (linkerd2#1505); a client that opened a connection sends
    /// its first bytes at once, and ports where the server speaks first
    /// skip the wait (`opaque_ports`).
    pub fn detect_timeout() -> Located<HumanDuration> {
        Located::new(HumanDuration::from_secs(1))
    }
    /// Linkerd's default opaque ports: SMTP, MySQL, Galera, PostgreSQL,
    /// Redis, Elasticsearch, Memcached.
    pub fn opaque_ports() -> Vec<Located<u16>> {
        [25, 587, 3306, 4444, 5432, 6379, 9300, 11211]
            .into_iter()
            .map(Located::new)
            .collect()
    }
    pub fn tunnel_idle_timeout() -> HumanDuration {
        HumanDuration::from_secs(3600)
    }
    pub fn h2_keepalive() -> HumanDuration {
        HumanDuration::from_secs(20)
    }
    pub fn app_timeout() -> HumanDuration {
        HumanDuration::from_secs(300)
    }
    /// Envoy's per-cluster default.
    pub fn max_connections() -> Located<usize> {
        Located::new(1024)
    }
    /// Far below the descriptors a container usually gets (1M), and far
    /// above what one app opens to its sidecar or a mesh to one workload.
    pub fn max_client_connections() -> Located<usize> {
        Located::new(10_000)
    }
    pub fn outbound_grace() -> HumanDuration {
        HumanDuration::from_secs(5)
    }
    pub fn drain_timeout() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    pub fn worker_threads() -> Located<usize> {
        Located::new(1)
    }
    /// A 24h certificate then warns with 6h left; rotation normally
    /// happens at half its life.
    pub fn expiry_warning() -> Located<f64> {
        Located::new(0.25)
    }
    pub fn log_level() -> Located<String> {
        Located::new("info".to_owned())
    }
}
