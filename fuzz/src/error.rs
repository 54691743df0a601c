//! `http::error`: the format of the proxy's own error responses, chosen
//! from the request (`ErrorFormat::of`: `Content-Type`, `Accept`), and
//! the responses themselves, whose texts carry what the client sent
//! (host, path, method).
//!
//! Input: a header block; its first line also serves as the host, path
//! and method the errors name.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::{Method, Response, StatusCode};
use pilotfish::http::error::{ERROR_HEADER, ErrorFormat};
use pilotfish::http::{Body, DenyReason, Direction, ProxyError};
use pilotfish::identity::SpiffeId;

use super::input::{header_map, list_elements, number, split_first_line};

/// Checks one input.
pub fn run(data: &[u8]) {
    let headers = header_map(data);
    let format = ErrorFormat::of(&headers);
    let content_type = headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes);
    if content_type.is_some_and(|t| t.starts_with(b"application/grpc")) {
        assert_eq!(format, ErrorFormat::Grpc);
    } else {
        assert_ne!(format, ErrorFormat::Grpc);
        // A client that lists plain `application/json` gets JSON.
        let asks_json = headers.get_all(ACCEPT).iter().any(|v| {
            list_elements(v.as_bytes()).any(|e| e.eq_ignore_ascii_case(b"application/json"))
        });
        if asks_json || content_type.is_some_and(|t| t.eq_ignore_ascii_case(b"application/json")) {
            assert_eq!(format, ErrorFormat::Json);
        }
        if headers.get(ACCEPT).is_none() && content_type.is_none() {
            assert_eq!(format, ErrorFormat::Text);
        }
    }

    let (first, _) = split_first_line(data);
    let words = String::from_utf8_lossy(first);
    for err in errors(&words, number(first)) {
        for direction in [Direction::Inbound, Direction::Outbound] {
            for format in [
                format,
                ErrorFormat::Text,
                ErrorFormat::Json,
                ErrorFormat::Grpc,
            ] {
                check_response(&err, direction, format);
            }
        }
    }
}

/// Errors whose texts carry what the client sent.
fn errors(words: &str, n: u64) -> Vec<ProxyError> {
    let method = Method::from_bytes(words.as_bytes()).unwrap_or(Method::GET);
    let caller = SpiffeId::parse(words)
        .unwrap_or_else(|_| SpiffeId::for_service("cluster.local", "default", "fuzz"));
    vec![
        ProxyError::NoAuthority,
        ProxyError::InvalidPath,
        ProxyError::NoRoute {
            host: words.to_owned(),
        },
        ProxyError::Forbidden {
            caller,
            method,
            path: words.to_owned(),
            reason: DenyReason::PathNotAllowed,
        },
        ProxyError::RateLimited {
            limit: Arc::from(words),
            wait: Duration::from_nanos(n),
            policy: HeaderValue::from_static("\"fuzz\";q=1;w=1"),
            quoted: Arc::from(format!("\"{}\"", words.replace(['"', '\\'], "_"))),
        },
        ProxyError::BreakerOpen {
            service: words.to_owned(),
        },
    ]
}

/// Every error response names its reason, has the reason's status (a gRPC
/// rate limit: 200 with `grpc-status` 8), and a body in the format asked.
fn check_response(err: &ProxyError, direction: Direction, format: ErrorFormat) {
    let reason = err.reason();
    let response = err.to_response(direction, format);
    assert_eq!(
        response.headers()[ERROR_HEADER],
        reason.as_str(),
        "{err:?} {format:?}"
    );
    let grpc_limit = format == ErrorFormat::Grpc && matches!(err, ProxyError::RateLimited { .. });
    if grpc_limit {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "8");
    } else {
        assert_eq!(response.status(), reason.status(), "{err:?}");
    }
    if let ProxyError::RateLimited { wait, .. } = err {
        let seconds: u64 = response.headers()[http::header::RETRY_AFTER]
            .to_str()
            .expect("digits")
            .parse()
            .expect("whole seconds");
        assert!(
            seconds >= 1 && Duration::from_secs(seconds) >= *wait,
            "{seconds} < {wait:?}"
        );
    }
    let body = body_bytes(response);
    match format {
        ErrorFormat::Json => {
            let json: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{err:?}: the JSON body does not parse: {e}"));
            assert_eq!(json["error"], reason.as_str());
            assert_eq!(json["status"], reason.status().as_u16());
            assert_eq!(json["message"], err.to_string());
        }
        ErrorFormat::Text => {
            let text = String::from_utf8(body.to_vec()).expect("UTF-8 text");
            assert!(text.starts_with(reason.status().as_str()), "{text:?}");
            assert_eq!(text.matches('\n').count(), 1, "not one line: {text:?}");
        }
        ErrorFormat::Grpc => {}
    }
}

fn body_bytes(response: Response<Body>) -> Bytes {
    match response.into_body() {
        Body::Empty => Bytes::new(),
        Body::Full(bytes) => bytes.unwrap_or_default(),
        other => panic!("an error body is made whole: {other:?}"),
    }
}
