//! How an attempt ended, classified once for everything that reacts to it:
//! the retry decision, outlier ejection, the load balancer's latency
//! estimate and the error-rate breaker.
//!
//! The proxy decides on what it saw itself: its own errors, and the status
//! of a response. A response's headers are the upstream's to write, so
//! none of them is believed, with one exception: on the mesh link the far
//! sidecar reports how *its* attempt to reach its app failed, in
//! [`OUTCOME_HEADER`]. Only a peer that proved a mesh identity in the mTLS
//! handshake is read ([`Outcome::from_peer`], called by the mesh endpoint),
//! and that peer removes the header from everything its own app sends, so
//! no app can write it. The near sidecar then retries, ejects and breaks
//! on the far app's connect failure, reset or timeout as it would on its
//! own, and removes the header before its app sees the response.

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::{Body, ProxyError};

/// Between sidecars only: the far sidecar's account of why its app gave no
/// response (`connect-failure`, `refused-stream`, `reset`, `timeout`), on
/// the error response it makes instead.
pub const OUTCOME_HEADER: HeaderName = HeaderName::from_static("pilotfish-outcome");

/// What happened to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response came back (any status).
    Response {
        /// Its status.
        status: u16,
        /// `grpc-status` in its headers, if any.
        grpc: Option<u32>,
    },
    /// No response: the attempt failed on its way.
    Failed(Failure),
    /// On the mesh link: the far sidecar answered `status` itself because
    /// reaching its app failed, and said how.
    PeerFailed {
        /// How the far sidecar's attempt failed.
        failure: Failure,
        /// The status of its error response.
        status: u16,
    },
    /// Refused here, before any connection: a limit, no endpoints.
    Local,
    /// The client went away first: it says nothing of the upstream.
    Cancelled,
}

/// How an attempt failed to get a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made (TCP, TLS, HTTP/2 preface): the
    /// app never saw the request.
    ConnectFailure,
    /// Refused unprocessed (HTTP/2 REFUSED_STREAM, a GOAWAY that did not
    /// cover it, a connection that closed before the request was written).
    RefusedStream,
    /// The connection or stream broke after the request went out.
    Reset,
    /// No response within the per-try timeout or the deadline.
    Timeout,
}

impl Failure {
    /// Its name, as the mesh link carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectFailure => "connect-failure",
            Self::RefusedStream => "refused-stream",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
        }
    }

    fn parse(text: &[u8]) -> Option<Self> {
        Some(match text {
            b"connect-failure" => Self::ConnectFailure,
            b"refused-stream" => Self::RefusedStream,
            b"reset" => Self::Reset,
            b"timeout" => Self::Timeout,
            _ => return None,
        })
    }

    /// Whether the app cannot have seen the request.
    pub fn unreached(self) -> bool {
        matches!(self, Self::ConnectFailure | Self::RefusedStream)
    }
}

/// The far sidecar's account, beside the response it carried (see
/// [`Outcome::from_peer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerOutcome(pub Failure);

impl Outcome {
    /// Classifies an attempt's result.
    pub fn of(result: &Result<Response<Body>, ProxyError>) -> Self {
        match result {
            Ok(response) => match response.extensions().get::<PeerOutcome>() {
                Some(PeerOutcome(failure)) => Self::PeerFailed {
                    failure: *failure,
                    status: response.status().as_u16(),
                },
                None => Self::of_response(response.status(), response.headers()),
            },
            Err(err) => Self::of_error(err),
        }
    }

    /// Classifies a response by what the proxy can see for itself.
    pub fn of_response(status: StatusCode, headers: &HeaderMap) -> Self {
        Self::Response {
            status: status.as_u16(),
            grpc: super::grpc::status(headers),
        }
    }

    /// Classifies a proxy error.
    pub fn of_error(err: &ProxyError) -> Self {
        Self::Failed(match err {
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::Tls { .. }
            | ProxyError::Alpn { .. } => Failure::ConnectFailure,
            ProxyError::Upstream { source, .. } if refused_unprocessed(source.as_ref()) => {
                Failure::RefusedStream
            }
            ProxyError::Upstream { .. } => Failure::Reset,
            ProxyError::AttemptTimeout { .. } | ProxyError::ResponseTimeout { .. } => {
                Failure::Timeout
            }
            _ => return Self::Local,
        })
    }

    /// Reads the far sidecar's account from a response of the mesh link,
    /// removing the header. Call it only for responses from a verified
    /// peer sidecar.
    pub fn from_peer(response: &mut Response<Body>) {
        let Some(value) = response.headers_mut().remove(OUTCOME_HEADER) else {
            return;
        };
        // A word a newer peer may use and we do not know: the status decides.
        if let Some(failure) = Failure::parse(value.as_bytes()) {
            response.extensions_mut().insert(PeerOutcome(failure));
        }
    }

    /// The account a sidecar gives its peer for an error reaching its own
    /// app, if the error is one the peer can act on.
    pub fn for_peer(self) -> Option<HeaderValue> {
        match self {
            Self::Failed(failure) => Some(HeaderValue::from_static(failure.as_str())),
            _ => None,
        }
    }

    /// How it failed to get a response, here or at the far sidecar.
    pub fn failure(self) -> Option<Failure> {
        match self {
            Self::Failed(failure) | Self::PeerFailed { failure, .. } => Some(failure),
            _ => None,
        }
    }

    /// The status of the response that came back, if one did.
    pub fn status(self) -> Option<u16> {
        match self {
            Self::Response { status, .. } | Self::PeerFailed { status, .. } => Some(status),
            _ => None,
        }
    }

    /// A short name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Response { .. } => "response",
            Self::Failed(failure) | Self::PeerFailed { failure, .. } => failure.as_str(),
            Self::Local => "local",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the app cannot have seen the request, so that even a
    /// non-idempotent request may be sent again.
    pub fn unreached(self) -> bool {
        match self {
            Self::Local => true,
            _ => self.failure().is_some_and(Failure::unreached),
        }
    }

    /// Whether it counts against the endpoint and the destination (for
    /// outlier ejection and the breaker): 5xx, failed connections, resets
    /// and timeouts; not limits reached here, nor a client leaving.
    pub fn is_failure(self) -> bool {
        match self {
            Self::Response { status, .. } => status >= 500,
            Self::Failed(_) | Self::PeerFailed { .. } => true,
            Self::Local | Self::Cancelled => false,
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

    fn response_with(status: u16, outcome: Option<&str>) -> Response<Body> {
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(outcome) = outcome {
            response
                .headers_mut()
                .insert(OUTCOME_HEADER, HeaderValue::from_str(outcome).unwrap());
        }
        response
    }

    #[test]
    fn responses_are_classified_by_status_and_grpc_status() {
        let ok = Outcome::of(&Ok(response_with(200, None)));
        assert!(!ok.is_failure());
        let error = Outcome::of(&Ok(response_with(503, None)));
        assert!(error.is_failure());
        assert!(!error.unreached(), "an app's 503 may come after it acted");

        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(
            Outcome::of_response(StatusCode::OK, &grpc),
            Outcome::Response {
                status: 200,
                grpc: Some(14),
            }
        );
    }

    #[test]
    fn the_account_header_counts_only_from_a_peer_sidecar() {
        // Whoever wrote it, the header alone decides nothing.
        let forged = Outcome::of(&Ok(response_with(503, Some("connect-failure"))));
        assert_eq!(
            forged,
            Outcome::Response {
                status: 503,
                grpc: None
            }
        );
        assert!(!forged.unreached());

        // Read from the mesh link, it is the far sidecar's account, and it
        // goes no further.
        for failure in [
            Failure::ConnectFailure,
            Failure::RefusedStream,
            Failure::Reset,
            Failure::Timeout,
        ] {
            let wire = Outcome::Failed(failure)
                .for_peer()
                .expect("sent to the peer");
            let mut response = response_with(502, wire.to_str().ok());
            Outcome::from_peer(&mut response);
            assert!(!response.headers().contains_key(OUTCOME_HEADER));
            let outcome = Outcome::of(&Ok(response));
            assert_eq!(
                outcome,
                Outcome::PeerFailed {
                    failure,
                    status: 502
                }
            );
            assert_eq!(outcome.unreached(), failure.unreached());
            assert!(outcome.is_failure());
        }
        let mut unknown = response_with(502, Some("meteor-strike"));
        Outcome::from_peer(&mut unknown);
        assert_eq!(
            Outcome::of(&Ok(unknown)),
            Outcome::Response {
                status: 502,
                grpc: None
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
        assert_eq!(
            Outcome::of_error(&refused),
            Outcome::Failed(Failure::ConnectFailure)
        );
        assert!(Outcome::of_error(&refused).unreached());
        let over = ProxyError::Overloaded {
            limit: "max-requests",
        };
        assert_eq!(Outcome::of_error(&over), Outcome::Local);
        assert!(!Outcome::of_error(&over).is_failure());
        assert_eq!(Outcome::Local.for_peer(), None, "the peer's own limits");
        let reset = ProxyError::Upstream {
            addr,
            source: "broken pipe".into(),
        };
        assert_eq!(Outcome::of_error(&reset), Outcome::Failed(Failure::Reset));
        assert!(!Outcome::of_error(&reset).unreached());
        assert!(!Outcome::Cancelled.is_failure());
    }
}
