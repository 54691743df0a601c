//! Exponential backoff with full jitter: before retry `n` (1, 2, ...) wait
//! a random time in `[0, min(max, base * 2^n))`. Random waits keep clients
//! that failed together from retrying together. A 429 or 503 that says
//! when to come back (`Retry-After`) is waited for at least that long; a
//! wait longer than [`MAX_RETRY_AFTER`] is read as that (no request's
//! deadline is that long, so it means "not within this request").

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

/// The longest `Retry-After` read: a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a 429 or 503 response asks to wait before trying again:
/// `Retry-After` as seconds or as an HTTP date (RFC 9110 §10.2.3), at most
/// [`MAX_RETRY_AFTER`].
pub fn retry_after(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let date = httpdate::parse_http_date(value).ok()?;
            date.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The wait before retry `n`, from a random `unit` in `[0, 1)`.
pub fn full_jitter(base: Duration, max: Duration, n: u32, unit: f64) -> Duration {
    let ceiling = base.saturating_mul(2u32.saturating_pow(n.min(31))).min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// The wait before retry `n`, with a fresh random draw.
pub fn next(base: Duration, max: Duration, n: u32) -> Duration {
    full_jitter(base, max, n, fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("retry-after", value.parse().unwrap());
            headers
        };
        let too_many = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            retry_after(too_many, &with("3"), now),
            Some(Duration::from_secs(3))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &with(&date), now),
            Some(Duration::from_secs(7))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(
            retry_after(too_many, &with(&past), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(too_many, &with("soon"), now), None);
        assert_eq!(retry_after(too_many, &HeaderMap::new(), now), None);
        assert_eq!(retry_after(StatusCode::BAD_GATEWAY, &with("3"), now), None);
        // From the wire: any number, however large, is a bounded wait.
        let huge = u64::MAX.to_string();
        assert_eq!(
            retry_after(too_many, &with(&huge), now),
            Some(MAX_RETRY_AFTER)
        );
        let far =
            httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799));
        assert_eq!(
            retry_after(too_many, &with(&far), now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn waits_grow_then_cap() {
        let base = Duration::from_millis(25);
        let max = Duration::from_millis(250);
        let ceilings = [50, 100, 200, 250, 250];
        for (n, ceiling) in (1..).zip(ceilings) {
            assert_eq!(
                full_jitter(base, max, n, 1.0),
                Duration::from_millis(ceiling),
                "retry {n}"
            );
            assert_eq!(full_jitter(base, max, n, 0.0), Duration::ZERO);
        }
        assert_eq!(
            full_jitter(base, max, 40, 0.5),
            Duration::from_millis(125),
            "no overflow"
        );
    }

    #[test]
    fn random_waits_stay_in_range_and_spread() {
        let base = Duration::from_millis(25);
        let max = Duration::from_millis(250);
        let waits: Vec<Duration> = (0..1000).map(|_| next(base, max, 2)).collect();
        assert!(waits.iter().all(|w| *w < Duration::from_millis(100)));
        let low = waits
            .iter()
            .filter(|w| **w < Duration::from_millis(50))
            .count();
        assert!(
            (300..700).contains(&low),
            "not uniform: {low} of 1000 below half"
        );
    }
}
