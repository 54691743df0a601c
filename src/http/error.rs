//! Errors the proxy produces itself, and the one place they become HTTP
//! responses: a status, a short body, and a `pilotfish-error` header naming
//! the reason, so an operator can tell them from the app's own errors. The
//! body is a line of text, or a small JSON object with the same fields for
//! a client that asked for JSON (one that parses every body as JSON would
//! otherwise turn the proxy's answer into an error of its own and lose the
//! reason).

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::Body;
use crate::tls::IdentityMismatch;

/// Header on every response the proxy makes itself; its value is a [`Reason`].
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("pilotfish-error");

/// On a 403 from the authorization policy: why it refused ([`DenyReason`]).
pub const AUTHZ_HEADER: HeaderName = HeaderName::from_static("pilotfish-authz");

/// Why a request was refused: the value of the `pilotfish-authz` header
/// and of the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No rule names this caller.
    NoRuleForCaller,
    /// Rules name the caller, but none for this path.
    PathNotAllowed,
    /// Rules name the caller and path, but not this method.
    MethodNotAllowed,
    /// Rules name the caller, but not this port (a raw TCP connection).
    PortNotAllowed,
    /// The caller is outside this sidecar's trust domain.
    ForeignTrustDomain,
}

impl DenyReason {
    /// The reason as a label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRuleForCaller => "no-rule-for-caller",
            Self::PathNotAllowed => "path-not-allowed",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::PortNotAllowed => "port-not-allowed",
            Self::ForeignTrustDomain => "foreign-trust-domain",
        }
    }
}

/// How an error response is written, chosen from the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    /// A line of text (`text/plain`).
    Text,
    /// A JSON object (`application/json`): the request's `Accept` names a
    /// JSON type, or it was JSON itself.
    Json,
    /// A gRPC call: a rate limit answers in gRPC's trailers-only form.
    Grpc,
}

impl ErrorFormat {
    /// The format for the request with these headers.
    pub fn of(headers: &http::HeaderMap) -> Self {
        let content_type = headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes);
        if content_type.is_some_and(|t| t.starts_with(b"application/grpc")) {
            return Self::Grpc;
        }
        let accepts_json = headers
            .get_all(http::header::ACCEPT)
            .iter()
            .any(|v| names_json(v.as_bytes()));
        if accepts_json || content_type.is_some_and(is_json) {
            Self::Json
        } else {
            Self::Text
        }
    }
}

/// Whether an `Accept` value lists a JSON media type it does not refuse
/// (`q=0`).
fn names_json(accept: &[u8]) -> bool {
    accept.split(|b| *b == b',').any(|range| {
        let mut params = range.split(|b| *b == b';');
        let kind = params.next().unwrap_or_default();
        let refused = params.any(|p| {
            let weight = p.trim_ascii().strip_prefix(b"q=");
            weight.and_then(|q| std::str::from_utf8(q).ok()?.parse::<f32>().ok()) == Some(0.0)
        });
        is_json(kind) && !refused
    })
}

/// `application/json`, or a structured `+json` type, case-insensitively.
fn is_json(media_type: &[u8]) -> bool {
    let kind = media_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    kind.eq_ignore_ascii_case(b"application/json")
        || (kind.len() > 5 && kind[kind.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// Which side of the sidecar produced a response or saw a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Mesh -> app.
    Inbound,
    /// App -> mesh.
    Outbound,
    /// Clients from outside -> mesh, through the edge gateway.
    Gateway,
}

impl Direction {
    /// `inbound`, `outbound` or `gateway`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Gateway => "gateway",
        }
    }
}

/// The machine-readable reason of a proxy error: the value of the
/// `pilotfish-error` header (and, later, of metric labels and log fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The request names no destination (no absolute URI, no Host).
    BadRequest,
    /// No route matches the request's host and path.
    NoRoute,
    /// No gateway route matches: the edge answers 404, as a web server
    /// would, where a sidecar's 503 says its config lacks a destination.
    NotFound,
    /// More header fields than the limit.
    HeadersTooLarge,
    /// The endpoint refused the TCP connection.
    ConnectRefused,
    /// The TCP connection failed for another reason.
    ConnectFailed,
    /// TCP connect plus TLS handshake took longer than the connect timeout.
    ConnectTimeout,
    /// The TLS handshake failed (bad certificate, refused client cert, ...).
    TlsFailed,
    /// The server's certificate is valid but names another workload.
    PeerIdentity,
    /// The connection broke or the stream was reset before a response.
    UpstreamReset,
    /// No response headers within the timeout.
    ResponseTimeout,
    /// The authorization policy refused the caller.
    Forbidden,
    /// A config reload removed this side while the connection was open.
    NotServing,
    /// One attempt took longer than the per-try timeout (and no retry was
    /// left).
    AttemptTimeout,
    /// A concurrency limit of the destination was reached.
    Overloaded,
    /// The destination's error-rate breaker is open.
    BreakerOpen,
    /// The destination has no endpoints (DNS gave none).
    NoEndpoints,
    /// A rate limit refused the request.
    RateLimited,
    /// The far sidecar refused a tunnel (CONNECT, opaque TCP).
    TunnelRefused,
    /// No destination of the config answers to a CONNECT's host.
    TunnelNotAllowed,
    /// The request's body is larger than its route allows.
    BodyTooLarge,
    /// The gateway route needs a token and the request has none.
    MissingToken,
    /// The request's token was refused (expired, bad signature, ...).
    InvalidToken,
    /// The token is valid but lacks a role or scope the route needs.
    InsufficientScope,
}

impl Reason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::NoRoute => "no-route",
            Self::NotFound => "not-found",
            Self::HeadersTooLarge => "headers-too-large",
            Self::ConnectRefused => "connect-refused",
            Self::ConnectFailed => "connect-failed",
            Self::ConnectTimeout => "connect-timeout",
            Self::TlsFailed => "tls-failed",
            Self::PeerIdentity => "peer-identity",
            Self::UpstreamReset => "upstream-reset",
            Self::ResponseTimeout => "response-timeout",
            Self::Forbidden => "forbidden",
            Self::NotServing => "not-serving",
            Self::AttemptTimeout => "attempt-timeout",
            Self::Overloaded => "overloaded",
            Self::BreakerOpen => "breaker-open",
            Self::NoEndpoints => "no-endpoints",
            Self::RateLimited => "rate-limited",
            Self::TunnelRefused => "tunnel-refused",
            Self::TunnelNotAllowed => "tunnel-not-allowed",
            Self::BodyTooLarge => "body-too-large",
            Self::MissingToken => "missing-token",
            Self::InvalidToken => "invalid-token",
            Self::InsufficientScope => "insufficient-scope",
        }
    }

    /// The status of the response. 4xx: the request itself is at fault;
    /// 502: the upstream misbehaved; 503: nothing could take the request;
    /// 504: the upstream was too slow.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden | Self::TunnelNotAllowed | Self::InsufficientScope => {
                StatusCode::FORBIDDEN
            }
            Self::MissingToken | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoRoute
            | Self::ConnectRefused
            | Self::ConnectFailed
            | Self::NotServing
            | Self::Overloaded
            | Self::BreakerOpen
            | Self::NoEndpoints => StatusCode::SERVICE_UNAVAILABLE,
            Self::TlsFailed | Self::PeerIdentity | Self::UpstreamReset | Self::TunnelRefused => {
                StatusCode::BAD_GATEWAY
            }
            Self::ConnectTimeout | Self::ResponseTimeout | Self::AttemptTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }
}

/// A request the proxy could not carry out.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// See [`Reason::BadRequest`].
    #[error("the request names no destination: send an absolute URI or a Host header")]
    NoAuthority,
    /// See [`Reason::BadRequest`]: the path has no valid normal form.
    #[error(
        "the request's path is malformed: a % that starts no %XX escape, or no valid normal form"
    )]
    InvalidPath,
    /// See [`Reason::NoRoute`].
    #[error("no route for host {host:?}")]
    NoRoute {
        /// The host asked for.
        host: String,
    },
    /// See [`Reason::NotFound`].
    #[error("no gateway route for {path:?}")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// See [`Reason::HeadersTooLarge`].
    #[error("{count} header fields, more than the limit of {limit}")]
    TooManyHeaders {
        /// Fields in the request.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TCP connect plus handshake timed out.
    #[error("connecting to {addr} took longer than {}", humantime::format_duration(*after))]
    ConnectTimeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// TLS handshake failed.
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The endpoint.
        addr: SocketAddr,
        /// The error from rustls.
        source: std::io::Error,
    },
    /// The peer did not agree to the link's HTTP version in the TLS
    /// handshake.
    #[error("{addr} did not negotiate ALPN {wanted}; is it a Pilotfish inbound port?")]
    Alpn {
        /// The endpoint.
        addr: SocketAddr,
        /// The protocol offered (`h2` or `http/1.1`).
        wanted: &'static str,
    },
    /// The request failed on an established connection.
    #[error("{addr} failed the request: {}", chain(source.as_ref()))]
    Upstream {
        /// The endpoint.
        addr: SocketAddr,
        /// The HTTP client's error.
        source: super::BoxError,
    },
    /// The authorization policy refused the request.
    #[error("{caller} may not {method} {path}: {}", reason.as_str())]
    Forbidden {
        /// Who called.
        caller: crate::identity::SpiffeId,
        /// The method.
        method: http::Method,
        /// The (normalized) path.
        path: String,
        /// Why.
        reason: DenyReason,
    },
    /// This side is no longer configured.
    #[error("this listener is no longer configured")]
    NotServing,
    /// No response headers in time, all attempts included.
    #[error("no response from {service} within {}", humantime::format_duration(*after))]
    ResponseTimeout {
        /// The destination.
        service: String,
        /// The timeout.
        after: Duration,
    },
    /// One attempt took longer than the per-try timeout.
    #[error("{addr} sent no response within the per-try timeout of {}", humantime::format_duration(*after))]
    AttemptTimeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// A concurrency limit of the destination was reached.
    #[error("too many requests at once: the destination's {limit} limit is reached")]
    Overloaded {
        /// Which limit (`max-requests`, `max-pending`, `max-connections`).
        limit: &'static str,
    },
    /// The error-rate breaker is open.
    #[error("{service} is failing; its breaker is open")]
    BreakerOpen {
        /// The destination.
        service: String,
    },
    /// No endpoints to send to.
    #[error("{service} has no endpoints")]
    NoEndpoints {
        /// The destination.
        service: String,
    },
    /// The far sidecar answered a tunnel's CONNECT with an error.
    #[error("{addr} refused the tunnel: {status}{}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    TunnelRefused {
        /// The far sidecar.
        addr: SocketAddr,
        /// Its answer.
        status: StatusCode,
        /// Its `pilotfish-error`, if it gave one.
        reason: Option<String>,
    },
    /// The gateway refused the request's token, or it has none
    /// ([`Reason::MissingToken`] when `reason` is `missing-token`, else
    /// [`Reason::InvalidToken`]). Never holds the token itself.
    #[error("{}", unauthenticated_message(.reason))]
    Unauthenticated {
        /// `missing-token`, or the `error_description`: `expired`,
        /// `bad-signature`, `unknown-key`, ...
        reason: &'static str,
    },
    /// The token is valid but lacks a role or scope the route needs.
    #[error("the token lacks {missing}")]
    InsufficientScope {
        /// What it lacks: `role admin`, `scope orders:write`.
        missing: String,
    },
    /// A CONNECT to a host no destination answers to.
    #[error("CONNECT to {host:?} is not allowed: no destination of this sidecar answers to it")]
    TunnelNotAllowed {
        /// The host asked for.
        host: String,
    },
    /// See [`Reason::BodyTooLarge`].
    #[error("the request body is larger than the route's limit of {limit} bytes")]
    PayloadTooLarge {
        /// The route's `max_request_body`, in bytes.
        limit: u64,
    },
    /// A rate limit refused the request.
    #[error("rate limit {limit:?} reached; retry in {}", humantime::format_duration(*wait))]
    RateLimited {
        /// The limit's name.
        limit: std::sync::Arc<str>,
        /// Until the next token (at millisecond precision).
        wait: Duration,
        /// Its `RateLimit-Policy` value.
        policy: HeaderValue,
        /// Its name as a quoted string, for `RateLimit`.
        quoted: std::sync::Arc<str>,
    },
}

impl ProxyError {
    /// A request, or a connection's handshake, failed at `addr`'s end.
    pub fn upstream(addr: SocketAddr, err: hyper::Error) -> Self {
        Self::Upstream {
            addr,
            source: err.into(),
        }
    }

    /// The reason reported in the header.
    pub fn reason(&self) -> Reason {
        match self {
            Self::NoAuthority | Self::InvalidPath => Reason::BadRequest,
            Self::NoRoute { .. } => Reason::NoRoute,
            Self::NotFound { .. } => Reason::NotFound,
            Self::TooManyHeaders { .. } => Reason::HeadersTooLarge,
            Self::Connect { source, .. } => match source.kind() {
                std::io::ErrorKind::ConnectionRefused => Reason::ConnectRefused,
                _ => Reason::ConnectFailed,
            },
            Self::ConnectTimeout { .. } => Reason::ConnectTimeout,
            Self::Tls { source, .. } if is_identity_mismatch(source) => Reason::PeerIdentity,
            // The connection broke before any certificate was seen.
            Self::Tls { source, .. }
                if crate::tls::classify_error(source) == crate::tls::HandshakeFailure::Io =>
            {
                Reason::ConnectFailed
            }
            Self::Tls { .. } | Self::Alpn { .. } => Reason::TlsFailed,
            Self::Upstream { .. } => Reason::UpstreamReset,
            Self::ResponseTimeout { .. } => Reason::ResponseTimeout,
            Self::Forbidden { .. } => Reason::Forbidden,
            Self::NotServing => Reason::NotServing,
            Self::AttemptTimeout { .. } => Reason::AttemptTimeout,
            Self::Overloaded { .. } => Reason::Overloaded,
            Self::BreakerOpen { .. } => Reason::BreakerOpen,
            Self::NoEndpoints { .. } => Reason::NoEndpoints,
            Self::RateLimited { .. } => Reason::RateLimited,
            Self::TunnelRefused { .. } => Reason::TunnelRefused,
            Self::TunnelNotAllowed { .. } => Reason::TunnelNotAllowed,
            Self::PayloadTooLarge { .. } => Reason::BodyTooLarge,
            Self::Unauthenticated { reason } if *reason == MISSING_TOKEN => Reason::MissingToken,
            Self::Unauthenticated { .. } => Reason::InvalidToken,
            Self::InsufficientScope { .. } => Reason::InsufficientScope,
        }
    }

    /// The response the client gets for this error, in `format`.
    pub fn to_response(&self, direction: Direction, format: ErrorFormat) -> Response<Body> {
        let reason = self.reason();
        if format == ErrorFormat::Grpc && reason == Reason::RateLimited {
            return self.to_grpc_response(direction);
        }
        let status = reason.status();
        let (body, content_type) = match format {
            ErrorFormat::Json => (self.json_body(direction), "application/json"),
            ErrorFormat::Text | ErrorFormat::Grpc => (
                format!(
                    "{} {}: pilotfish {}: {self}\n",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or(""),
                    direction.as_str(),
                ),
                "text/plain; charset=utf-8",
            ),
        };
        let mut response = Response::new(Body::full(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(reason.as_str()));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Self::Forbidden { reason, .. } = self {
            headers.insert(AUTHZ_HEADER, HeaderValue::from_static(reason.as_str()));
        }
        self.add_rate_limit_headers(headers);
        self.add_www_authenticate(headers);
        response
    }

    /// `{"error": REASON, "status": N, "message": ..., "proxy": "pilotfish
    /// outbound"}`, with `authz` on a 403 and `retry_after` (seconds) on a
    /// 429: what the headers say, for a client that reads only the body.
    fn json_body(&self, direction: Direction) -> String {
        let reason = self.reason();
        let mut body = serde_json::json!({
            "error": reason.as_str(),
            "status": reason.status().as_u16(),
            "message": self.to_string(),
            "proxy": format!("pilotfish {}", direction.as_str()),
        });
        if let Self::Forbidden { reason, .. } = self {
            body["authz"] = reason.as_str().into();
        }
        if let Self::RateLimited { wait, .. } = self {
            body["retry_after"] = retry_after_seconds(*wait).into();
        }
        body.to_string() + "\n"
    }

    /// The response a gRPC client gets: HTTP 200 with the status in
    /// `grpc-status` (trailers-only), as gRPC clients expect. A rate limit
    /// is RESOURCE_EXHAUSTED (8); other errors are UNAVAILABLE (14).
    fn to_grpc_response(&self, direction: Direction) -> Response<Body> {
        let code = match self.reason() {
            Reason::RateLimited => "8",
            Reason::NotFound => "12", // UNIMPLEMENTED: no such method here
            _ => "14",
        };
        let mut response = Response::new(Body::Empty);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(super::grpc::GRPC_STATUS, HeaderValue::from_static(code));
        // grpc-message is percent-encoded; ours is plain ASCII but for '%'.
        let message = format!("pilotfish {}: {self}", direction.as_str()).replace('%', "%25");
        if let Ok(message) = HeaderValue::from_str(&message) {
            headers.insert(super::grpc::GRPC_MESSAGE, message);
        }
        headers.insert(
            ERROR_HEADER,
            HeaderValue::from_static(self.reason().as_str()),
        );
        self.add_rate_limit_headers(headers);
        self.add_www_authenticate(headers);
        response
    }

    /// `WWW-Authenticate` on a 401 or 403 of the gateway's token check
    /// (RFC 6750 3): only the realm when there was no token at all.
    fn add_www_authenticate(&self, headers: &mut http::HeaderMap) {
        let value = match self {
            Self::Unauthenticated { reason } if *reason == MISSING_TOKEN => {
                format!("Bearer realm=\"{REALM}\"")
            }
            Self::Unauthenticated { reason } => format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{reason}\""
            ),
            Self::InsufficientScope { missing } => format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", error_description=\"missing {}\"",
                quoted_string_content(missing)
            ),
            _ => return,
        };
        let value = HeaderValue::from_str(&value)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"pilotfish\""));
        headers.insert(http::header::WWW_AUTHENTICATE, value);
    }

    /// `Retry-After` (whole seconds, rounded up) and the IETF
    /// `RateLimit-Policy` / `RateLimit` fields, on a rate-limited answer.
    fn add_rate_limit_headers(&self, headers: &mut http::HeaderMap) {
        let Self::RateLimited {
            wait,
            policy,
            quoted,
            ..
        } = self
        else {
            return;
        };
        let seconds = retry_after_seconds(*wait);
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        headers.insert("ratelimit-policy", policy.clone());
        if let Ok(value) = HeaderValue::from_str(&format!("{quoted};r=0;t={seconds}")) {
            headers.insert("ratelimit", value);
        }
    }
}

/// The `Unauthenticated` reason of a request without a token.
pub const MISSING_TOKEN: &str = "missing-token";

/// The realm of the gateway's `WWW-Authenticate` challenges.
const REALM: &str = "pilotfish";

/// The message of [`ProxyError::Unauthenticated`].
fn unauthenticated_message(reason: &str) -> String {
    if reason == MISSING_TOKEN {
        "this route needs a token: Authorization: Bearer TOKEN".to_owned()
    } else {
        format!("the token is refused: {reason}")
    }
}

/// `text` for inside a quoted-string: `"` and `\\` escaped, controls
/// and non-ASCII dropped (a field value is ASCII).
fn quoted_string_content(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
    {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_seconds(wait: Duration) -> u64 {
    let rounded_up = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    rounded_up.max(1)
}

/// An error and its causes, `outer: inner: innermost`, without repeats
/// (hyper's messages often end with their source's text already).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn is_identity_mismatch(err: &std::io::Error) -> bool {
    let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return false;
    };
    other.0.downcast_ref::<IdentityMismatch>().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_name_and_a_proxy_status() {
        let all = [
            Reason::BadRequest,
            Reason::NoRoute,
            Reason::NotFound,
            Reason::HeadersTooLarge,
            Reason::ConnectRefused,
            Reason::ConnectFailed,
            Reason::ConnectTimeout,
            Reason::TlsFailed,
            Reason::PeerIdentity,
            Reason::UpstreamReset,
            Reason::ResponseTimeout,
            Reason::Forbidden,
            Reason::NotServing,
            Reason::AttemptTimeout,
            Reason::Overloaded,
            Reason::BreakerOpen,
            Reason::NoEndpoints,
            Reason::RateLimited,
            Reason::TunnelRefused,
            Reason::TunnelNotAllowed,
            Reason::BodyTooLarge,
            Reason::MissingToken,
            Reason::InvalidToken,
            Reason::InsufficientScope,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), all.len());
        for reason in all {
            assert!(reason.status().is_client_error() || reason.status().is_server_error());
        }
    }

    #[test]
    fn a_body_over_the_limit_is_413() {
        let err = ProxyError::PayloadTooLarge { limit: 1024 };
        let response = err.to_response(Direction::Outbound, ErrorFormat::Text);
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[ERROR_HEADER], "body-too-large");
        assert!(err.to_string().contains("1024 bytes"), "{err}");
    }

    #[test]
    fn responses_name_the_reason() {
        let err = ProxyError::NoRoute {
            host: "nowhere".into(),
        };
        let response = err.to_response(Direction::Outbound, ErrorFormat::Text);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[ERROR_HEADER], "no-route");
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }

    #[test]
    fn json_is_for_requests_that_ask_for_it_or_are_json() {
        let format = |pairs: &[(&str, &str)]| {
            let mut headers = http::HeaderMap::new();
            for (name, value) in pairs {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            ErrorFormat::of(&headers)
        };
        use ErrorFormat::{Grpc, Json, Text};
        let cases: &[(&[(&str, &str)], ErrorFormat)] = &[
            (&[], Text),
            (&[("accept", "*/*")], Text),
            (&[("accept", "text/html, application/xhtml+xml")], Text),
            (&[("accept", "application/json")], Json),
            (&[("accept", "text/plain;q=0.5, Application/JSON")], Json),
            (&[("accept", "application/problem+json")], Json),
            (&[("accept", "application/json;q=0, text/plain")], Text),
            (
                &[("accept", "text/plain"), ("accept", "application/json")],
                Json,
            ),
            (&[("content-type", "application/json; charset=utf-8")], Json),
            (&[("content-type", "application/grpc+proto")], Grpc),
            (&[("content-type", "text/jsonish")], Text),
        ];
        for (headers, want) in cases {
            assert_eq!(format(headers), *want, "{headers:?}");
        }
    }

    #[test]
    fn a_json_body_carries_what_the_headers_say() {
        let caller =
            crate::identity::SpiffeId::parse("spiffe://cluster.local/ns/default/sa/orders")
                .expect("id");
        let err = ProxyError::Forbidden {
            caller,
            method: http::Method::POST,
            path: "/admin".into(),
            reason: DenyReason::PathNotAllowed,
        };
        let response = err.to_response(Direction::Inbound, ErrorFormat::Json);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let Body::Full(Some(bytes)) = response.body() else {
            panic!("a whole body");
        };
        let body: serde_json::Value = serde_json::from_slice(bytes).expect("JSON");
        assert_eq!(body["error"], "forbidden");
        assert_eq!(body["status"], 403);
        assert_eq!(body["authz"], "path-not-allowed");
        assert_eq!(body["proxy"], "pilotfish inbound");
        assert!(body["message"].as_str().unwrap().contains("/admin"));

        let limited = ProxyError::RateLimited {
            limit: "per-caller".into(),
            wait: Duration::from_millis(1500),
            policy: HeaderValue::from_static("\"per-caller\";q=10;w=1"),
            quoted: "\"per-caller\"".into(),
        };
        let response = limited.to_response(Direction::Outbound, ErrorFormat::Json);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
        let Body::Full(Some(bytes)) = response.body() else {
            panic!("a whole body");
        };
        let body: serde_json::Value = serde_json::from_slice(bytes).expect("JSON");
        assert_eq!(
            (body["error"].as_str(), body["retry_after"].as_u64()),
            (Some("rate-limited"), Some(2))
        );
    }

    #[test]
    fn refused_and_other_connect_errors_differ() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let refused = ProxyError::Connect {
            addr,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let other = ProxyError::Connect {
            addr,
            source: std::io::ErrorKind::HostUnreachable.into(),
        };
        assert_eq!(refused.reason(), Reason::ConnectRefused);
        assert_eq!(other.reason(), Reason::ConnectFailed);
    }
}
