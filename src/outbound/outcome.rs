//! How an attempt ended, classified once for everything that reacts to it:
//! the retry decision, outlier ejection and the error-rate breaker.

use http::{HeaderMap, Response, StatusCode};

use crate::http::{Body, ERROR_HEADER, ProxyError};

/// What happened to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response came back (any status).
    Response {
        /// Its status.
        status: u16,
        /// `grpc-status` in its headers, if any.
        grpc: Option<u32>,
        /// Whether it proves the app never saw the request: the far
        /// sidecar answered that it could not connect to its app.
        unreached: bool,
    },
    /// The connection could not be made (TCP, TLS, HTTP/2 preface).
    ConnectFailure,
    /// The peer refused the stream unprocessed (REFUSED_STREAM, GOAWAY).
    RefusedStream,
    /// The connection or stream broke after the request went out.
    Reset,
    /// The per-try timeout fired.
    Timeout,
    /// Refused here, before any connection: a limit, no endpoints.
    Local,
}

impl Outcome {
    /// Classifies an attempt's result.
    pub fn of(result: &Result<Response<Body>, ProxyError>) -> Self {
        match result {
            Ok(response) => Self::of_response(response.status(), response.headers()),
            Err(err) => Self::of_error(err),
        }
    }

    /// Classifies a response.
    pub fn of_response(status: StatusCode, headers: &HeaderMap) -> Self {
        let grpc = crate::http::grpc::status(headers);
        let unreached = status.is_server_error()
            && headers.get(ERROR_HEADER).is_some_and(|reason| {
                matches!(
                    reason.as_bytes(),
                    b"connect-refused" | b"connect-failed" | b"connect-timeout"
                )
            });
        Self::Response {
            status: status.as_u16(),
            grpc,
            unreached,
        }
    }

    /// Classifies a proxy error.
    pub fn of_error(err: &ProxyError) -> Self {
        match err {
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::Tls { .. }
            | ProxyError::Alpn { .. } => Self::ConnectFailure,
            ProxyError::Upstream { source, .. } if refused_unprocessed(source.as_ref()) => {
                Self::RefusedStream
            }
            ProxyError::Upstream { .. } => Self::Reset,
            ProxyError::AttemptTimeout { .. } => Self::Timeout,
            _ => Self::Local,
        }
    }

    /// Whether the app cannot have seen the request, so that even a
    /// non-idempotent request may be sent again.
    pub fn unreached(self) -> bool {
        match self {
            Self::Response { unreached, .. } => unreached,
            Self::ConnectFailure | Self::RefusedStream | Self::Local => true,
            Self::Reset | Self::Timeout => false,
        }
    }

    /// Whether it counts against the endpoint and the destination (for
    /// outlier ejection and the breaker): 5xx and failed connections, not
    /// limits reached here.
    pub fn is_failure(self) -> bool {
        match self {
            Self::Response { status, .. } => status >= 500,
            Self::Local => false,
            _ => true,
        }
    }
}

/// An HTTP/2 stream the peer never processed: reset with REFUSED_STREAM,
/// or cut by a graceful GOAWAY that did not cover it.
fn refused_unprocessed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            // hyper hands back requests it never sent as "canceled".
            if hyper.is_canceled() {
                return true;
            }
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let mut headers = HeaderMap::new();
        let ok = Outcome::of_response(StatusCode::OK, &headers);
        assert!(!ok.is_failure());
        let error = Outcome::of_response(StatusCode::SERVICE_UNAVAILABLE, &headers);
        assert!(error.is_failure());
        assert!(!error.unreached(), "an app's 503 may come after it acted");

        headers.insert(ERROR_HEADER, "connect-refused".parse().unwrap());
        let far_app_down = Outcome::of_response(StatusCode::SERVICE_UNAVAILABLE, &headers);
        assert!(far_app_down.is_failure());
        assert!(far_app_down.unreached());

        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(
            Outcome::of_response(StatusCode::OK, &grpc),
            Outcome::Response {
                status: 200,
                grpc: Some(14),
                unreached: false
            }
        );
    }

    #[test]
    fn errors() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let refused = ProxyError::Connect {
            addr,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(Outcome::of_error(&refused), Outcome::ConnectFailure);
        assert!(Outcome::of_error(&refused).unreached());
        let over = ProxyError::Overloaded {
            limit: "max-requests",
        };
        assert_eq!(Outcome::of_error(&over), Outcome::Local);
        assert!(!Outcome::of_error(&over).is_failure());
        let reset = ProxyError::Upstream {
            addr,
            source: "broken pipe".into(),
        };
        assert_eq!(Outcome::of_error(&reset), Outcome::Reset);
        assert!(!Outcome::of_error(&reset).unreached());
    }
}
