//! `ratelimit`: limits built from a validated config (`RateLimits::build`)
//! and checked for requests (`RateLimits::check`: the bucket key from the
//! caller, the client address or a header; overrides; shadow mode), and
//! the token buckets themselves (`KeyedBuckets`, exact times).
//!
//! Input: YAML for the `rate_limits:` list (under a fixed sidecar with
//! inbound, an outbound service `users` and a route `api`), then a line `%%`, then
//! requests, one a line: `in|out CALLER IP SERVICE ROUTE name: value`
//! (`-` for none). A final `%%` section drives the buckets directly: the
//! first line `RATE BURST MAX_KEYS`, then `KEY MILLISECONDS_LATER` lines.

use std::net::IpAddr;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pilotfish::config::{LimitDirection, parse_str};
use pilotfish::http::{Direction, ErrorFormat, ProxyError};
use pilotfish::identity::SpiffeId;
use pilotfish::ratelimit::bucket::{Rate, Take};
use pilotfish::ratelimit::keyed::KeyedBuckets;
use pilotfish::ratelimit::{Limited, RateLimits, Subject};

use super::input::{header_map, text};

const SIDECAR: &str = "\
service: fuzz
tls: { ca: ca.pem, cert: cert.pem, key: key.pem }
inbound: { app: \"127.0.0.1:8081\" }
outbound:
  services:
    users: { endpoints: [\"127.0.0.1:1\"] }
  routes:
    - { name: api, host: api, path_prefix: /, service: users }
rate_limits:
";

/// Checks one input.
pub fn run(data: &[u8]) {
    let Some(data) = text(data) else {
        return;
    };
    let mut sections = data.split("\n%%\n");
    let yaml = sections.next().unwrap_or_default();
    let requests = sections.next().unwrap_or_default();
    if let Some(buckets) = sections.next() {
        check_buckets(buckets);
    }
    let Ok(config) = parse_str(&format!("{SIDECAR}{yaml}"), Path::new("fuzz.yaml")) else {
        return;
    };
    // A global limit starts a Redis client on the runtime: not here.
    if config.rate_limits.iter().any(|l| l.global.is_some()) {
        return;
    }
    let limits = RateLimits::build(&config, super::metrics(), None)
        .unwrap_or_else(|e| panic!("a validated config does not build: {e}"));
    for line in requests.lines() {
        let mut words = line.splitn(6, ' ');
        let mut next = || words.next().filter(|w| *w != "-");
        let direction = match next() {
            Some("in") => LimitDirection::Inbound,
            Some("out") => LimitDirection::Outbound,
            _ => continue,
        };
        let caller = next().and_then(|c| SpiffeId::parse(c).ok());
        let client = next().and_then(|ip| ip.parse::<IpAddr>().ok());
        let (service, route) = (next(), next());
        let headers = header_map(next().unwrap_or_default().as_bytes());
        let subject = Subject {
            caller: caller.as_ref(),
            client,
            headers: &headers,
            service,
            route,
            claims: None,
        };
        if let Some(limited) = check(&limits, direction, &subject) {
            check_limited(&config, limited);
        }
    }
}

/// `RateLimits::check`, which completes at once for local limits.
fn check(limits: &RateLimits, direction: LimitDirection, subject: &Subject<'_>) -> Option<Limited> {
    let mut future = pin!(limits.check(direction, subject));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(limited) => limited,
        Poll::Pending => panic!("a local limit waited"),
    }
}

/// A refusal names an enforcing limit, and its 429 says when to retry.
fn check_limited(config: &pilotfish::config::Config, limited: Limited) {
    let limit = config
        .rate_limits
        .iter()
        .find(|l| l.name.as_str() == &*limited.limit)
        .unwrap_or_else(|| panic!("refused by an unknown limit {:?}", limited.limit));
    assert!(!limit.shadow, "a shadow limit refused");
    // (The wait may round to zero: the missing fraction of a token can
    // come in under a nanosecond; `Retry-After` says 1 then.)
    let interval = Rate::new(*limit.rate, None).interval();
    let overrides = limit
        .overrides
        .iter()
        .map(|o| Rate::new(*o.rate, None).interval());
    let longest = overrides.fold(interval, Duration::max);
    assert!(limited.wait <= longest, "{:?} > {longest:?}", limited.wait);
    let response = ProxyError::from(limited).to_response(Direction::Inbound, ErrorFormat::Text);
    assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()[http::header::RETRY_AFTER]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
}

/// Buckets keyed by arbitrary keys at exact times: at most `max_keys`
/// buckets and the overflow one; never more than `burst` at once; a
/// refusal's wait is when the next token is there.
fn check_buckets(section: &str) {
    let mut lines = section.lines();
    let mut numbers = lines.next().unwrap_or_default().split(' ');
    let mut number = || numbers.next().and_then(|n| n.parse::<f64>().ok());
    let (Some(per_second), burst, Some(max_keys)) = (number(), number(), number()) else {
        return;
    };
    // What config validation allows.
    if !(per_second.is_finite() && per_second > 0.0 && per_second <= 1e9) {
        return;
    }
    let burst = burst.map(|b| b.clamp(0.0, f64::from(u32::MAX)) as u32);
    let rate = Rate::new(per_second, burst);
    let max_keys = max_keys.clamp(1.0, 1000.0) as usize;
    let buckets = KeyedBuckets::new(max_keys);
    let start = tokio::time::Instant::now();
    let mut now = start;
    for line in lines {
        let (key, later) = line.rsplit_once(' ').unwrap_or((line, "0"));
        let later = later.parse::<u32>().unwrap_or(0);
        now += Duration::from_millis(u64::from(later));
        match buckets.take(key, rate, now) {
            Take::Allowed { remaining } => assert!(remaining < rate.burst),
            Take::Limited { wait } => {
                assert!(wait <= rate.interval(), "{wait:?} > {:?}", rate.interval());
            }
        }
        assert!(buckets.len() <= max_keys + 1, "{} buckets", buckets.len());
    }
}
