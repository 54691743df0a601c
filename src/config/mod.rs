//! The sidecar's configuration: typed, documented data read from YAML.
//!
//! Every field has a safe default except the few that only the operator can
//! know (`service`, `tls`, the app address, destination endpoints), so a
//! short file runs. `config/reference.yaml` documents every field.
//! [`load`] reads and validates a file; errors carry `FILE:LINE:COLUMN`.

mod load;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::identity::{ServiceName, SpiffeId};

pub use load::{ConfigError, ConfigErrors, check_files, load, parse_str};
pub use validate::expected_identity;
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
    pub tls: Option<TlsFiles>,
    /// The admin listener: health, metrics, effective config.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Mesh -> app. Absent: this sidecar accepts no mesh traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundConfig>,
    /// App -> mesh. Absent: the app cannot call other services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundConfig>,
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
}

impl Config {
    /// This sidecar's own SPIFFE id.
    pub fn identity(&self) -> SpiffeId {
        SpiffeId::for_service(&self.trust_domain, &self.namespace, self.service.as_str())
    }
}

/// PEM files. Relative paths are read from the config file's directory.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA bundle: the trust anchor(s) for peers in both directions.
    pub ca: Located<PathBuf>,
    /// This workload's certificate chain (leaf first).
    pub cert: Located<PathBuf>,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key: Located<PathBuf>,
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

/// Mesh -> app: terminate mTLS, identify the caller, forward to the app.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// mTLS listener for other sidecars (default `0.0.0.0:15006`).
    #[serde(default = "defaults::inbound_listen")]
    pub listen: Located<SocketAddr>,
    /// Where the app listens for plain HTTP, normally on loopback.
    pub app: Located<SocketAddr>,
    /// HTTP version spoken to the app: `auto` (the version the calling app
    /// used), `http1` or `http2` (h2c with prior knowledge). Default `auto`.
    #[serde(default)]
    pub app_protocol: UpstreamProtocol,
    /// Longest wait for a TCP connection to the app (default 1s).
    #[serde(default = "defaults::app_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Longest wait for a TLS handshake from a peer (default 10s).
    #[serde(default = "defaults::handshake_timeout")]
    pub handshake_timeout: HumanDuration,
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

/// App -> mesh: route plain HTTP from the app to destination services.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Plain HTTP listener for the app (default `127.0.0.1:15001`). Accepts
    /// HTTP/1.1 and h2c with prior knowledge on the same port.
    #[serde(default = "defaults::outbound_listen")]
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
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Longest wait for the response headers after the request is sent
    /// (default 15s, as Envoy's route timeout). Bodies may stream longer.
    #[serde(default = "defaults::response_timeout")]
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
    #[serde(default = "defaults::path_prefix")]
    pub path_prefix: String,
    /// The destination service (a key of `outbound.services`).
    pub service: Located<String>,
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
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: defaults::max_header_bytes(),
            max_headers: defaults::max_headers(),
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
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: defaults::drain_timeout(),
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
    pub fn path_prefix() -> String {
        "/".to_owned()
    }
    pub fn max_header_bytes() -> Located<ByteSize> {
        Located::new(ByteSize::kib(64))
    }
    pub fn max_headers() -> Located<usize> {
        Located::new(100)
    }
    pub fn drain_timeout() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    pub fn worker_threads() -> Located<usize> {
        Located::new(1)
    }
    pub fn log_level() -> Located<String> {
        Located::new("info".to_owned())
    }
}
