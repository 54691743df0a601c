//! `http::grpc`: `grpc-timeout` (a caller's deadline), `grpc-status` and
//! the gRPC content type, from headers and trailers.
//!
//! Input: a status code on the first line (200 if none), then a header
//! block.

use std::time::Duration;

use http::StatusCode;
use pilotfish::http::grpc::{self, GRPC_TIMEOUT};
use pilotfish::http::outcome::Outcome;

use super::input::{header_map, split_first_line};

/// Checks one input.
pub fn run(data: &[u8]) {
    let (first, block) = split_first_line(data);
    let status = StatusCode::from_bytes(first).unwrap_or(StatusCode::OK);
    let headers = header_map(block);

    let timeout = grpc::timeout(&headers);
    let value = headers.get(GRPC_TIMEOUT).map(|v| v.as_bytes());
    assert_eq!(
        timeout,
        value.and_then(spec_timeout),
        "grpc-timeout {value:?}"
    );
    if let Some(timeout) = timeout {
        // The deadline layer adds it to the clock (`Instant::now() + t`).
        assert!(tokio::time::Instant::now().checked_add(timeout).is_some());
    }

    let code = grpc::status(&headers);
    assert_eq!(
        Outcome::of_response(status, &headers),
        Outcome::Response {
            status: status.as_u16(),
            grpc: code
        }
    );

    let content_type = headers.get(http::header::CONTENT_TYPE);
    assert_eq!(
        grpc::is_grpc(&headers),
        content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    );
}

/// The gRPC spec's `Timeout`: 1 to 8 ASCII digits and a unit.
fn spec_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}
