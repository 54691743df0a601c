//! The few gRPC conventions a proxy must understand: the `grpc-timeout`
//! deadline and the `grpc-status` of a response.

use std::time::Duration;

use http::{HeaderMap, HeaderName};

/// The gRPC call's deadline.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// The gRPC status, in trailers or a trailers-only response's headers.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The gRPC status message.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The deadline a gRPC client sent in `grpc-timeout` (1 to 8 digits and a
/// unit: H, M, S, m, u, n), if any and well-formed.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The numeric `grpc-status` in these headers or trailers.
pub fn status(headers: &HeaderMap) -> Option<u32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// Whether a response is gRPC (`content-type: application/grpc...`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("100m", Some(Duration::from_millis(100))),
            ("2S", Some(Duration::from_secs(2))),
            ("1H", Some(Duration::from_secs(3600))),
            ("3M", Some(Duration::from_secs(180))),
            ("250u", Some(Duration::from_micros(250))),
            ("5n", Some(Duration::from_nanos(5))),
            ("99999999S", Some(Duration::from_secs(99_999_999))),
            ("123456789S", None),
            ("10", None),
            ("m", None),
            ("-1S", None),
            ("1x", None),
        ];
        for (text, want) in cases {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(timeout(&headers), *want, "{text}");
        }
    }
}
