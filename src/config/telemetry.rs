//! `tracing:`, `access_log:` and `request_ids:`: what the sidecar tells
//! operators about each request, beyond its metrics.

use http::HeaderName;
use serde::{Deserialize, Serialize};

use super::{HumanDuration, Located};

/// Distributed tracing: trace context in headers, spans over OTLP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Header formats read and written, in order of preference: `w3c`
    /// (`traceparent`), `b3` (one `b3` header), `b3multi` (`x-b3-*`).
    /// Listing several bridges them: the first one present is read, and
    /// all are written, so B3 and W3C services share one trace
    /// (default `[w3c]`).
    #[serde(default = "defaults::propagation")]
    pub propagation: Located<Vec<PropagationFormat>>,
    /// Share of new traces this sidecar samples, from 0 to 1, when the
    /// caller made no decision; a caller's decision is always followed
    /// (default 0.01, as Istio: a sidecar at every hop multiplies spans).
    #[serde(default = "defaults::sample_ratio")]
    pub sample_ratio: Located<f64>,
    /// Where spans go. Absent: the context is still propagated, so the
    /// apps' own tracers and other sidecars see one trace, but this
    /// sidecar records no spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpConfig>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            propagation: defaults::propagation(),
            sample_ratio: defaults::sample_ratio(),
            otlp: None,
        }
    }
}

/// A header format for the trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PropagationFormat {
    /// W3C Trace Context: `traceparent` and `tracestate`.
    W3c,
    /// B3 in one header: `b3`.
    B3,
    /// B3 in several headers: `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`
    /// and the rest of `x-b3-*`.
    B3multi,
}

impl PropagationFormat {
    /// The name the config spells it with: `w3c`, `b3`, `b3multi`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::W3c => "w3c",
            Self::B3 => "b3",
            Self::B3multi => "b3multi",
        }
    }
}

/// The OTLP collector spans are exported to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// `http://HOST:PORT` of the collector (gRPC, usually port 4317), or
    /// its `/v1/traces` URL (HTTP, usually port 4318; `/v1/traces` is
    /// added to a bare `http://HOST:PORT`). Plain HTTP only: run the
    /// collector as a local agent (a DaemonSet or a sidecar).
    pub endpoint: Located<String>,
    /// `grpc` (default) or `http` (protobuf over HTTP).
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Longest wait for one export; the batch is dropped (and counted)
    /// after it (default 10s, as the OpenTelemetry SDKs).
    #[serde(default = "defaults::export_timeout")]
    pub timeout: HumanDuration,
    /// Longest a finished span waits before its batch is sent (default
    /// 5s, as the OpenTelemetry SDKs).
    #[serde(default = "defaults::flush_interval")]
    pub flush_interval: HumanDuration,
    /// Most spans sent in one export (default 512).
    #[serde(default = "defaults::max_batch")]
    pub max_batch: Located<usize>,
    /// Most finished spans waiting for export; more are dropped and
    /// counted, never waited for (default 2048).
    #[serde(default = "defaults::max_queue")]
    pub max_queue: Located<usize>,
}

impl OtlpConfig {
    /// The URL spans are sent to: the endpoint as written, with
    /// `/v1/traces` added to a bare HTTP endpoint.
    pub fn url(&self) -> String {
        let endpoint = self.endpoint.trim_end_matches('/');
        match self.protocol {
            OtlpProtocol::Http if !has_path(endpoint) => format!("{endpoint}/v1/traces"),
            _ => endpoint.to_owned(),
        }
    }
}

/// Whether a URL has a path beyond `/`.
fn has_path(url: &str) -> bool {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .contains('/')
}

/// An OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

/// Access logs: one line per request, on stdout.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `off` (default), `json` (one object per line) or `text`.
    #[serde(default)]
    pub format: AccessLogFormat,
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// No access log.
    #[default]
    Off,
    /// One JSON object per line.
    Json,
    /// Readable `key=value` lines.
    Text,
}

/// The ids that tie log lines of one request together.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestIdConfig {
    /// The correlation id's header (default `x-correlation-id`). Like
    /// `x-request-id`, it is kept when present, passed to the app and
    /// upstream, and returned to the client; when absent it takes the
    /// request id's value.
    #[serde(default = "defaults::correlation_header")]
    pub correlation_header: Located<String>,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        Self {
            correlation_header: defaults::correlation_header(),
        }
    }
}

/// The request id's own header, which no correlation header may take
/// (`http::request_id::REQUEST_ID`; a test there checks they agree).
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Reads a `request_ids.correlation_header`: a valid header name, other
/// than `x-request-id`, which carries the request id.
pub fn parse_correlation_header(name: &str) -> Result<HeaderName, String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if header == REQUEST_ID {
        return Err(format!(
            "the correlation header cannot be {REQUEST_ID}, which carries the request id"
        ));
    }
    Ok(header)
}

mod defaults {
    use super::*;

    pub fn propagation() -> Located<Vec<PropagationFormat>> {
        Located::new(vec![PropagationFormat::W3c])
    }
    pub fn sample_ratio() -> Located<f64> {
        Located::new(0.01)
    }
    pub fn export_timeout() -> HumanDuration {
        HumanDuration::from_secs(10)
    }
    pub fn flush_interval() -> HumanDuration {
        HumanDuration::from_secs(5)
    }
    pub fn max_batch() -> Located<usize> {
        Located::new(512)
    }
    pub fn max_queue() -> Located<usize> {
        Located::new(2048)
    }
    pub fn correlation_header() -> Located<String> {
        Located::new("x-correlation-id".to_owned())
    }
}
