//! `outbound::policy::backoff::retry_after`: how long an upstream's 429 or
//! 503 asks to wait, as seconds or an HTTP date.
//!
//! Input: the status on the first line (503 if none), the clock (Unix
//! seconds) on the second (a fixed time if none), then a header block.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use pilotfish::outbound::policy::backoff::{MAX_RETRY_AFTER, retry_after};

use super::input::{header_map, split_first_line, text};

/// Checks one input.
pub fn run(data: &[u8]) {
    let (first, rest) = split_first_line(data);
    let (second, block) = split_first_line(rest);
    let status = StatusCode::from_bytes(first).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let now_secs = text(second)
        .and_then(|t| t.parse::<u32>().ok())
        .map_or(1_700_000_000, u64::from);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
    let headers = header_map(block);

    let wait = retry_after(status, &headers, now);
    let asks = status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
    if !asks {
        assert_eq!(wait, None, "{status} has no Retry-After");
        return;
    }
    let value = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let want = value.and_then(|v| match v.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => {
            let date = httpdate::parse_http_date(v).ok()?;
            Some(date.duration_since(now).unwrap_or(Duration::ZERO))
        }
    });
    assert_eq!(
        wait,
        want.map(|w| w.min(MAX_RETRY_AFTER)),
        "Retry-After {value:?}"
    );
    if let Some(wait) = wait {
        assert!(wait <= MAX_RETRY_AFTER);
        // The retry layer adds the wait to the clock.
        assert!(tokio::time::Instant::now().checked_add(wait).is_some());
    }
}
