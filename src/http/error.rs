//! Errors the proxy produces itself, and the one place they become HTTP
//! responses: a status, a short plain body, and a `pilotfish-error` header
//! naming the reason, so an operator can tell them from the app's own errors.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::Body;
use crate::tls::IdentityMismatch;

/// Header on every response the proxy makes itself; its value is a [`Reason`].
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("pilotfish-error");

/// On a 403 from the authorization policy: why it refused
/// ([`crate::inbound::DenyReason`]).
pub const AUTHZ_HEADER: HeaderName = HeaderName::from_static("pilotfish-authz");

/// Which side of the sidecar produced a response or saw a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Mesh -> app.
    Inbound,
    /// App -> mesh.
    Outbound,
}

impl Direction {
    /// `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// The machine-readable reason of a proxy error: the value of the
/// `pilotfish-error` header (and, later, of metric labels and log fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The request names no destination (no absolute URI, no Host).
    BadRequest,
    /// The method is not supported (CONNECT tunnels).
    Unsupported,
    /// No route matches the request's host and path.
    NoRoute,
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
}

impl Reason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Unsupported => "unsupported",
            Self::NoRoute => "no-route",
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
        }
    }

    /// The status of the response. 4xx: the request itself is at fault;
    /// 502: the upstream misbehaved; 503: nothing could take the request;
    /// 504: the upstream was too slow.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unsupported => StatusCode::NOT_IMPLEMENTED,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::NoRoute
            | Self::ConnectRefused
            | Self::ConnectFailed
            | Self::NotServing
            | Self::Overloaded
            | Self::BreakerOpen
            | Self::NoEndpoints => StatusCode::SERVICE_UNAVAILABLE,
            Self::TlsFailed | Self::PeerIdentity | Self::UpstreamReset => StatusCode::BAD_GATEWAY,
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
    /// See [`Reason::Unsupported`].
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    /// See [`Reason::NoRoute`].
    #[error("no route for host {host:?}")]
    NoRoute {
        /// The host asked for.
        host: String,
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
        reason: crate::inbound::DenyReason,
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
            Self::NoAuthority => Reason::BadRequest,
            Self::Unsupported(_) => Reason::Unsupported,
            Self::NoRoute { .. } => Reason::NoRoute,
            Self::TooManyHeaders { .. } => Reason::HeadersTooLarge,
            Self::Connect { source, .. } => match source.kind() {
                std::io::ErrorKind::ConnectionRefused => Reason::ConnectRefused,
                _ => Reason::ConnectFailed,
            },
            Self::ConnectTimeout { .. } => Reason::ConnectTimeout,
            Self::Tls { source, .. } if is_identity_mismatch(source) => Reason::PeerIdentity,
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
        }
    }

    /// The response the client gets for this error.
    pub fn to_response(&self, direction: Direction) -> Response<Body> {
        let reason = self.reason();
        let status = reason.status();
        let body = format!(
            "{} {}: pilotfish {}: {self}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            direction.as_str(),
        );
        let mut response = Response::new(Body::full(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(reason.as_str()));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Self::Forbidden { reason, .. } = self {
            headers.insert(AUTHZ_HEADER, HeaderValue::from_static(reason.as_str()));
        }
        self.add_rate_limit_headers(headers);
        response
    }

    /// The response a gRPC client gets: HTTP 200 with the status in
    /// `grpc-status` (trailers-only), as gRPC clients expect. A rate limit
    /// is RESOURCE_EXHAUSTED (8); other errors are UNAVAILABLE (14).
    pub fn to_grpc_response(&self, direction: Direction) -> Response<Body> {
        let code = match self.reason() {
            Reason::RateLimited => "8",
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
        response
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
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        headers.insert("ratelimit-policy", policy.clone());
        if let Ok(value) = HeaderValue::from_str(&format!("{quoted};r=0;t={seconds}")) {
            headers.insert("ratelimit", value);
        }
    }
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
            Reason::Unsupported,
            Reason::NoRoute,
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
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), all.len());
        for reason in all {
            assert!(reason.status().is_client_error() || reason.status().is_server_error());
        }
    }

    #[test]
    fn responses_name_the_reason() {
        let err = ProxyError::NoRoute {
            host: "nowhere".into(),
        };
        let response = err.to_response(Direction::Outbound);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[ERROR_HEADER], "no-route");
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
