//! Calls to other services, as a meshed app makes them: plain HTTP/1.1 to
//! its own sidecar's outbound listener, naming the service in `Host`. The
//! sidecar does the rest (routing, mTLS, identity), so there is no TLS,
//! retry or timeout here.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// Trace and request-id headers, copied from the incoming request onto
/// every outgoing call. This is the one thing a meshed app must do itself:
/// the sidecar cannot tell which outgoing call belongs to which incoming
/// request, so without the copy the trace breaks at every service.
pub const PROPAGATED: [&str; 10] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-request-id",
    "x-correlation-id",
];

/// The headers of `incoming` to copy onto an outgoing call, and nothing else.
pub fn propagated(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in PROPAGATED {
        let name = HeaderName::from_static(name);
        for value in incoming.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// One call to another service.
#[derive(Debug)]
pub struct Call<'a> {
    /// The service, as the `Host` header names it.
    pub service: &'static str,
    /// The method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// A JSON body to send, if any.
    pub body: Option<Value>,
    /// Headers copied from the incoming request (see [`propagated`]).
    pub headers: &'a HeaderMap,
}

/// Why a call did not give a 2xx JSON answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request could not be sent or its answer not read.
    #[error("{0}")]
    Transport(String),
    /// The answer was not 2xx (it may come from a sidecar, see
    /// `pilotfish-error`), or not JSON.
    #[error("answered {status}")]
    Answer {
        /// The status.
        status: StatusCode,
        /// The body, as text.
        body: String,
        /// The `pilotfish-error` header, when a sidecar made the answer.
        pilotfish_error: Option<String>,
    },
}

impl Call<'_> {
    /// What the call was, for error messages: `GET users/users/7`.
    pub fn describe(&self) -> String {
        format!("{} {}{}", self.method, self.service, self.path)
    }

    /// Sends the call through the sidecar at `sidecar`; the answer's JSON.
    pub async fn send(self, sidecar: SocketAddr) -> Result<Value, CallError> {
        let transport = |what: &str, e: &dyn std::fmt::Display| {
            CallError::Transport(format!("{what} (sidecar {sidecar}): {e}"))
        };
        let tcp = TcpStream::connect(sidecar)
            .await
            .map_err(|e| transport("cannot connect to the sidecar", &e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| transport("HTTP handshake failed", &e))?;
        tokio::spawn(connection);
        let request = self.request().map_err(|e| transport("bad request", &e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport("the request failed", &e))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| transport("cannot read the answer", &e))?
            .to_bytes();
        let answer = |body: &Bytes| CallError::Answer {
            status: parts.status,
            body: String::from_utf8_lossy(body).into_owned(),
            pilotfish_error: parts
                .headers
                .get("pilotfish-error")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        };
        if !parts.status.is_success() {
            return Err(answer(&body));
        }
        serde_json::from_slice(&body).map_err(|_| answer(&body))
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, http::Error> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header(HOST, HeaderValue::from_static(self.service));
        let body = match &self.body {
            Some(value) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        if let Some(headers) = builder.headers_mut() {
            headers.extend(propagated(self.headers));
        }
        builder.body(Full::new(body))
    }
}

impl CallError {
    /// The JSON a 502 answer carries: which call failed, and how.
    pub fn to_json(&self, call: &str) -> Value {
        match self {
            Self::Transport(detail) => json!({
                "error": format!("the call {call} failed"),
                "call": call,
                "detail": detail,
            }),
            Self::Answer {
                status,
                body,
                pilotfish_error,
            } => json!({
                "error": format!("the call {call} answered {status}"),
                "call": call,
                "status": status.as_u16(),
                "body": body,
                "pilotfish_error": pilotfish_error,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_the_sidecars_propagate_is_copied() {
        let sidecar = crate::trace::propagation::HEADER_NAMES
            .iter()
            .chain(&["x-request-id", "x-correlation-id"]);
        for name in sidecar {
            assert!(PROPAGATED.contains(name), "{name} is not copied");
        }
    }

    #[test]
    fn only_trace_and_request_id_headers_are_copied() {
        let mut incoming = HeaderMap::new();
        incoming.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        incoming.append("x-request-id", HeaderValue::from_static("r1"));
        incoming.append("x-request-id", HeaderValue::from_static("r2"));
        incoming.insert("authorization", HeaderValue::from_static("secret"));
        incoming.insert(
            "pilotfish-client-id",
            HeaderValue::from_static("spiffe://x"),
        );
        incoming.insert("host", HeaderValue::from_static("orders"));
        let out = propagated(&incoming);
        assert_eq!(out.len(), 3);
        assert_eq!(out["traceparent"], "00-abc-def-01");
        let ids: Vec<_> = out.get_all("x-request-id").iter().collect();
        assert_eq!(ids, ["r1", "r2"]);
    }
}
