//! Per-destination resilience settings: retries, concurrency limits,
//! outlier ejection, the error-rate breaker, fallbacks, load balancing.
//! Defaults follow Envoy, Istio, Linkerd and opossum where they agree, and
//! say why where they do not (the README compares them side by side).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ByteSize, HumanDuration, Located};

/// How a destination picks an endpoint for each request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancer {
    /// In turn.
    RoundRobin,
    /// The less busy of two random endpoints (power of two choices).
    LeastRequest,
    /// The faster of two random endpoints, by a latency average that
    /// reacts to spikes at once (Linkerd's default, and ours).
    #[default]
    PeakEwma,
}

/// When a failed attempt is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// The connection (TCP, TLS) could not be made: never reached the app.
    ConnectFailure,
    /// The peer refused the stream (HTTP/2 REFUSED_STREAM, or GOAWAY
    /// before processing it): never reached the app.
    RefusedStream,
    /// The connection or stream broke after the request was sent.
    Reset,
    /// The attempt took longer than the per-try timeout.
    PerTryTimeout,
    /// Any 5xx response, and all of the above.
    FiveXx,
    /// 502, 503, 504, connect failures and per-try timeouts.
    GatewayError,
    /// This response status.
    Status(u16),
    /// This gRPC status, from the response headers or trailers.
    Grpc(GrpcCode),
}

/// gRPC status codes worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcCode {
    /// 1.
    Cancelled,
    /// 4.
    DeadlineExceeded,
    /// 8.
    ResourceExhausted,
    /// 13.
    Internal,
    /// 14.
    Unavailable,
}

impl GrpcCode {
    const ALL: [(Self, &'static str, u32); 5] = [
        (Self::Cancelled, "cancelled", 1),
        (Self::DeadlineExceeded, "deadline-exceeded", 4),
        (Self::ResourceExhausted, "resource-exhausted", 8),
        (Self::Internal, "internal", 13),
        (Self::Unavailable, "unavailable", 14),
    ];

    /// The numeric code in `grpc-status`.
    pub fn code(self) -> u32 {
        Self::ALL
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or(0, |e| e.2)
    }

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or("?", |e| e.1)
    }
}

impl FromStr for RetryOn {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "connect-failure" => Self::ConnectFailure,
            "refused-stream" => Self::RefusedStream,
            "reset" => Self::Reset,
            "per-try-timeout" => Self::PerTryTimeout,
            "5xx" => Self::FiveXx,
            "gateway-error" => Self::GatewayError,
            _ => {
                if let Some(name) = text.strip_prefix("grpc-") {
                    let code = GrpcCode::ALL.iter().find(|(_, n, _)| *n == name);
                    return code.map(|(c, _, _)| Self::Grpc(*c)).ok_or_else(|| {
                        format!("unknown gRPC status {name:?}; use cancelled, deadline-exceeded, resource-exhausted, internal or unavailable")
                    });
                }
                match text.parse::<u16>() {
                    Ok(code) if (100..=599).contains(&code) => Self::Status(code),
                    _ => {
                        return Err(format!(
                            "unknown retry condition {text:?}; use connect-failure, refused-stream, reset, \
                             per-try-timeout, 5xx, gateway-error, a status code (503) or grpc-<status>"
                        ));
                    }
                }
            }
        })
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectFailure => f.write_str("connect-failure"),
            Self::RefusedStream => f.write_str("refused-stream"),
            Self::Reset => f.write_str("reset"),
            Self::PerTryTimeout => f.write_str("per-try-timeout"),
            Self::FiveXx => f.write_str("5xx"),
            Self::GatewayError => f.write_str("gateway-error"),
            Self::Status(code) => write!(f, "{code}"),
            Self::Grpc(code) => write!(f, "grpc-{}", code.name()),
        }
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Retries of one destination (or route).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (default 2: one retry). 1 turns
    /// retries off.
    #[serde(default = "defaults::attempts")]
    pub attempts: Located<u32>,
    /// When to retry (default: connect-failure, refused-stream and reset;
    /// a reset retries only requests that are safe to repeat).
    #[serde(default = "defaults::retry_on")]
    pub on: Vec<Located<RetryOn>>,
    /// Backoff before retry N: random in [0, min(max, base * 2^N)) ("full
    /// jitter"). Default base 25ms, max 250ms, as Envoy.
    #[serde(default = "defaults::backoff_base")]
    pub backoff_base: HumanDuration,
    /// See `backoff_base`.
    #[serde(default = "defaults::backoff_max")]
    pub backoff_max: HumanDuration,
    /// Retry non-idempotent requests (POST, PATCH, ...) that may have
    /// reached the app. Default false: they are retried only when they
    /// provably did not, or carry an `Idempotency-Key`.
    #[serde(default)]
    pub non_idempotent: bool,
    /// Largest request body kept for replay (default 64KiB, as Linkerd);
    /// a larger body is not retried.
    #[serde(default = "defaults::max_body")]
    pub max_body: Located<ByteSize>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: defaults::attempts(),
            on: defaults::retry_on(),
            backoff_base: defaults::backoff_base(),
            backoff_max: defaults::backoff_max(),
            non_idempotent: false,
            max_body: defaults::max_body(),
        }
    }
}

/// The retry budget of a destination: over any `window`, retries may
/// number at most `ratio` of the requests that started in it, but
/// `min_per_second` a second are always allowed (the larger of the two,
/// not their sum).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries allowed per request in the window (default 0.2: 20%; above
    /// 1 allows several retries per request).
    #[serde(default = "defaults::budget_ratio")]
    pub ratio: Located<f64>,
    /// Retries always allowed per second, so quiet traffic can retry too
    /// (default 5).
    #[serde(default = "defaults::budget_min")]
    pub min_per_second: u32,
    /// How long a request and a retry count (default 1s: retries follow
    /// the traffic of the last second, not the healthy traffic before an
    /// outage).
    #[serde(default = "defaults::budget_window")]
    pub window: Located<HumanDuration>,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: defaults::budget_ratio(),
            min_per_second: defaults::budget_min(),
            window: defaults::budget_window(),
        }
    }
}

/// Concurrency limits of a destination (Envoy's circuit breakers; its
/// defaults, 1024 each). Over a limit a request fails fast with 503.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections to all its endpoints together.
    #[serde(default = "defaults::limit")]
    pub max_connections: usize,
    /// Requests waiting for a connection.
    #[serde(default = "defaults::limit")]
    pub max_pending: usize,
    /// Requests in flight.
    #[serde(default = "defaults::limit")]
    pub max_requests: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: defaults::limit(),
            max_pending: defaults::limit(),
            max_requests: defaults::limit(),
        }
    }
}

/// Per-endpoint outlier ejection (on by default).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// On or off (default on).
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
    /// Failures in a row that eject an endpoint (default 5, as Envoy).
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: Located<u32>,
    /// First ejection time; each ejection of the same endpoint lasts this
    /// times the number of its ejections (default 30s, as Envoy).
    #[serde(default = "defaults::base_ejection")]
    pub base_ejection: HumanDuration,
    /// Longest ejection (default 300s, as Envoy).
    #[serde(default = "defaults::max_ejection")]
    pub max_ejection: HumanDuration,
    /// Most endpoints ejected at once, in percent, but always at least one
    /// (default 50; Envoy's 10 ejects nothing below 10 endpoints).
    #[serde(default = "defaults::max_ejected_percent")]
    pub max_ejected_percent: Located<u32>,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: defaults::consecutive_failures(),
            base_ejection: defaults::base_ejection(),
            max_ejection: defaults::max_ejection(),
            max_ejected_percent: defaults::max_ejected_percent(),
        }
    }
}

/// The error-rate breaker of a destination, with opossum's semantics
/// (off unless configured) and defaults that act within seconds: after
/// healthy traffic, a full outage opens it once failures outnumber the
/// window's successes, half a window (2 s) in; it probes every 5 s.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Opens when the share of failed requests in the window is strictly
    /// more than this, in percent (default 50, as opossum).
    #[serde(default = "defaults::error_threshold")]
    pub error_threshold_percent: Located<u32>,
    /// Requests needed in the window before the breaker may open
    /// (default 10; opossum's 0 opens on the first failure).
    #[serde(default = "defaults::volume_threshold")]
    pub volume_threshold: u32,
    /// The rolling window (default 4s; opossum's 10s opens 5 s into an
    /// outage that follows healthy traffic).
    #[serde(default = "defaults::breaker_window")]
    pub window: Located<HumanDuration>,
    /// Buckets the window rolls by (default 8: half a second each).
    #[serde(default = "defaults::breaker_buckets")]
    pub buckets: Located<u32>,
    /// Time open before one probe is let through (default 5s, as Hystrix;
    /// opossum's 30s keeps a recovered destination refused for half a
    /// minute).
    #[serde(default = "defaults::reset_timeout")]
    pub reset_timeout: HumanDuration,
}

/// What a request gets while the breaker is open: a static response, or
/// the answer of another destination.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Another destination (a key of `outbound.services`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Located<String>>,
    /// Status of the static response (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Located<u16>>,
    /// Headers of the static response.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Body of the static response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Default values, each with its reason where it is not obvious.
mod defaults {
    use super::*;

    pub fn attempts() -> Located<u32> {
        Located::new(2)
    }
    /// The failures of the connection rather than of the app: the first
    /// two prove the app never saw the request; a reset (say, a keep-alive
    /// connection the server closed as we sent) retries only requests that
    /// are safe to repeat.
    pub fn retry_on() -> Vec<Located<RetryOn>> {
        vec![
            Located::new(RetryOn::ConnectFailure),
            Located::new(RetryOn::RefusedStream),
            Located::new(RetryOn::Reset),
        ]
    }
    pub fn backoff_base() -> HumanDuration {
        HumanDuration::from_millis(25)
    }
    pub fn backoff_max() -> HumanDuration {
        HumanDuration::from_millis(250)
    }
    pub fn max_body() -> Located<ByteSize> {
        Located::new(ByteSize::kib(64))
    }
    pub fn budget_ratio() -> Located<f64> {
        Located::new(0.2)
    }
    /// Linkerd's 10 a second is half the traffic of a service at 20
    /// requests a second; 5 lets quiet services retry a keep-alive race or
    /// a restarting endpoint, and bounds retries in an outage sooner.
    pub fn budget_min() -> u32 {
        5
    }
    /// One second: see `RetryBudgetConfig::window`.
    pub fn budget_window() -> Located<HumanDuration> {
        Located::new(HumanDuration::from_secs(1))
    }
    pub fn limit() -> usize {
        1024
    }
    pub fn enabled() -> bool {
        true
    }
    pub fn consecutive_failures() -> Located<u32> {
        Located::new(5)
    }
    pub fn base_ejection() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    pub fn max_ejection() -> HumanDuration {
        HumanDuration::from_secs(300)
    }
    pub fn max_ejected_percent() -> Located<u32> {
        Located::new(50)
    }
    pub fn error_threshold() -> Located<u32> {
        Located::new(50)
    }
    /// opossum's 0 lets a single failure open the breaker on a quiet
    /// service; 10 requests in 4 s (2.5 a second) is a small but real
    /// sample.
    pub fn volume_threshold() -> u32 {
        10
    }
    /// Half of it after healthy traffic is how long a full outage takes to
    /// open the breaker: 2 s.
    pub fn breaker_window() -> Located<HumanDuration> {
        Located::new(HumanDuration::from_secs(4))
    }
    pub fn breaker_buckets() -> Located<u32> {
        Located::new(8)
    }
    pub fn reset_timeout() -> HumanDuration {
        HumanDuration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_conditions_parse_and_print_back() {
        for text in [
            "connect-failure",
            "refused-stream",
            "reset",
            "per-try-timeout",
            "5xx",
            "gateway-error",
            "503",
            "429",
            "grpc-unavailable",
            "grpc-resource-exhausted",
        ] {
            let on: RetryOn = text.parse().unwrap();
            assert_eq!(on.to_string(), text);
        }
        for bad in ["5XX", "600", "grpc-ok", "sometimes", ""] {
            assert!(bad.parse::<RetryOn>().is_err(), "{bad}");
        }
    }
}
