//! Rate limits: token buckets that protect this service from its callers
//! (inbound) and other services from this app (outbound), per caller, per
//! client key, and across the replicas of a service through Redis
//! ([`global`]).
//!
//! ```text
//! inbound:  handshake -> authorization -> RateLimits::check -> app
//! outbound: route -> RateLimits::check -> destination stack
//! ```
//!
//! A limited request gets 429 with `Retry-After` and the IETF `RateLimit`
//! headers (a gRPC request: `grpc-status` 8, RESOURCE_EXHAUSTED), unless
//! the limit is in shadow mode, which only counts and logs. The limits of
//! a config reload that did not change keep their buckets.

pub mod bucket;
pub mod global;
pub mod keyed;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use tokio::time::Instant;
use tracing::info;

use self::bucket::{Rate, Take};
use self::global::{Global, GlobalSettings};
use self::keyed::KeyedBuckets;
use crate::build::BuildError;
use crate::caller::CallerMatch;
use crate::config::{Config, LimitDirection, LimitKey, RateLimitConfig};
use crate::identity::SpiffeId;
use crate::metrics::Metrics;

/// The key of requests that lack the limit's header.
const NO_KEY: &str = "";

/// Longest key kept as it is; longer ones (header values) are hashed, so
/// Redis keys and memory stay small.
const MAX_KEY: usize = 128;

/// What a request offers for its key.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The verified caller (inbound).
    pub caller: Option<&'a SpiffeId>,
    /// The client's address.
    pub client: Option<IpAddr>,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// Outbound: the destination and route it matched.
    pub service: Option<&'a str>,
    /// Outbound: the route's name.
    pub route: Option<&'a str>,
    /// Gateway: the claims of the verified token.
    pub claims: Option<&'a serde_json::Value>,
}

/// A request a limit refused.
#[derive(Debug, Clone)]
pub struct Limited {
    /// The limit's name.
    pub limit: Arc<str>,
    /// Until the next token.
    pub wait: Duration,
    /// The `RateLimit-Policy` value.
    pub policy: HeaderValue,
    /// The policy's name, quoted, for `RateLimit`.
    pub quoted: Arc<str>,
}

impl From<Limited> for crate::http::ProxyError {
    fn from(limited: Limited) -> Self {
        Self::RateLimited {
            limit: limited.limit,
            wait: limited.wait,
            policy: limited.policy,
            quoted: limited.quoted,
        }
    }
}

/// One limit, built from its config.
#[derive(Debug)]
pub struct Limit {
    config: RateLimitConfig,
    name: Arc<str>,
    quoted: Arc<str>,
    policy: HeaderValue,
    direction: LimitDirection,
    key: Key,
    rate: Rate,
    overrides: Vec<(Override, Rate)>,
    store: Store,
    metrics: crate::metrics::LimitMetrics,
    shadow_logged: AtomicU64,
}

#[derive(Debug)]
enum Key {
    None,
    Caller,
    ClientAddress,
    Header(HeaderName),
    Claim(String),
}

#[derive(Debug)]
enum Override {
    Caller(CallerMatch),
    Value(String),
}

#[derive(Debug)]
enum Store {
    Local(KeyedBuckets),
    Global(Arc<Global>),
}

impl Limit {
    fn build(
        config: &RateLimitConfig,
        own: &Config,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        let name: Arc<str> = config.name.as_str().into();
        let limit_metrics = metrics.rate_limits.for_limit(&name);
        let key = match config.key.get() {
            LimitKey::None => Key::None,
            LimitKey::Caller => Key::Caller,
            LimitKey::ClientAddress => Key::ClientAddress,
            LimitKey::Header(header) => {
                Key::Header(HeaderName::from_bytes(header.as_bytes()).map_err(BuildError::config)?)
            }
            LimitKey::Claim(claim) => Key::Claim(claim.clone()),
        };
        let overrides = config
            .overrides
            .iter()
            .map(|o| {
                let rate = Rate::new(*o.rate.get(), o.burst.as_ref().map(|b| *b.get()));
                let matcher = match (&o.caller, &o.value) {
                    (Some(caller), _) => Override::Caller(
                        CallerMatch::new(caller, &own.trust_domain, &own.namespace)
                            .map_err(BuildError::config)?,
                    ),
                    (None, Some(value)) => Override::Value(value.clone()),
                    (None, None) => {
                        return Err(BuildError::config("an override needs `caller` or `value`"));
                    }
                };
                Ok((matcher, rate))
            })
            .collect::<Result<_, BuildError>>()?;
        let rate = Rate::new(*config.rate.get(), config.burst.as_ref().map(|b| *b.get()));
        let max_keys = *config.max_keys.get();
        let store = match &config.global {
            None => Store::Local(KeyedBuckets::new(max_keys)),
            Some(global) => {
                let client = redis::Client::open(global.redis.as_str())
                    .map_err(|e| BuildError::config(format!("rate limit {name}: redis: {e}")))?;
                Store::Global(Global::start(
                    GlobalSettings {
                        client,
                        prefix: format!(
                            "pilotfish:ratelimit:{}/{}:{name}:",
                            own.namespace.as_str(),
                            own.service.as_str()
                        ),
                        on_failure: global.on_failure,
                        interval: global.sync_interval.0,
                        timeout: global.timeout.0,
                        replicas: *global.replicas.get(),
                        max_keys,
                    },
                    limit_metrics.clone(),
                ))
            }
        };
        let quoted: Arc<str> = format!("\"{}\"", name.replace(['"', '\\'], "_")).into();
        Ok(Self {
            config: config.clone(),
            policy: policy_header(&quoted, rate),
            quoted,
            name,
            direction: *config.direction.get(),
            key,
            rate,
            overrides,
            store,
            metrics: limit_metrics,
            shadow_logged: AtomicU64::new(0),
        })
    }

    /// Whether the request falls under this limit.
    fn applies(&self, direction: LimitDirection, subject: &Subject<'_>) -> bool {
        if self.direction != direction {
            return false;
        }
        let wants = |want: &Option<crate::config::Located<String>>, have: Option<&str>| {
            want.as_ref().is_none_or(|w| Some(w.as_str()) == have)
        };
        wants(&self.config.service, subject.service) && wants(&self.config.route, subject.route)
    }

    /// The request's bucket key and its rate.
    fn key_and_rate<'s>(&self, subject: &Subject<'s>) -> (Cow<'s, str>, Rate) {
        let key: Cow<'s, str> = match &self.key {
            Key::None => Cow::Borrowed(NO_KEY),
            Key::Caller => Cow::Borrowed(subject.caller.map_or(NO_KEY, |c| c.as_str())),
            Key::ClientAddress => subject
                .client
                .map_or(Cow::Borrowed(NO_KEY), |ip| Cow::Owned(ip.to_string())),
            Key::Header(name) => Cow::Borrowed(
                subject
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(NO_KEY),
            ),
            Key::Claim(name) => match subject.claims.and_then(|c| c.get(name)) {
                Some(serde_json::Value::String(value)) => Cow::Borrowed(value.as_str()),
                // A number or a list keys by its JSON text.
                Some(other) => Cow::Owned(other.to_string()),
                None => Cow::Borrowed(NO_KEY),
            },
        };
        let rate = self
            .overrides
            .iter()
            .find(|(matcher, _)| match matcher {
                Override::Caller(pattern) => subject.caller.is_some_and(|c| pattern.matches(c)),
                Override::Value(value) => *value == key,
            })
            .map_or(self.rate, |(_, rate)| *rate);
        let key = if key.len() > MAX_KEY {
            Cow::Owned(format!("#{:016x}", fnv1a(key.as_bytes())))
        } else {
            key
        };
        (key, rate)
    }

    async fn check(&self, subject: &Subject<'_>) -> Option<Limited> {
        let (key, rate) = self.key_and_rate(subject);
        let take = match &self.store {
            Store::Local(buckets) => buckets.take(&key, rate, Instant::now()),
            Store::Global(global) => global.take(&key, rate).await,
        };
        let wait = match take {
            Take::Allowed { .. } => {
                self.metrics.allowed();
                return None;
            }
            Take::Limited { wait } => wait,
        };
        if self.config.shadow {
            self.metrics.shadow_limited();
            self.log_shadow();
            return None;
        }
        self.metrics.limited();
        Some(Limited {
            limit: self.name.clone(),
            wait,
            policy: if rate == self.rate {
                self.policy.clone()
            } else {
                policy_header(&self.quoted, rate)
            },
            quoted: self.quoted.clone(),
        })
    }

    /// Logs shadow-mode refusals at most every 10 seconds.
    fn log_shadow(&self) {
        let now = crate::metrics::unix_seconds() as u64;
        let last = self.shadow_logged.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .shadow_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            info!(
                limit = %self.name,
                "shadow rate limit: requests over the limit are let through (counted in pilotfish_rate_limit_decisions_total{{decision=\"shadow_limited\"}})"
            );
        }
    }
}

/// Every limit of a config.
#[derive(Debug, Default)]
pub struct RateLimits {
    limits: Vec<Arc<Limit>>,
}

impl RateLimits {
    /// The limits of `config`; those `previous` has with the same settings
    /// are kept, buckets and all.
    pub fn build(
        config: &Config,
        metrics: &Metrics,
        previous: Option<&RateLimits>,
    ) -> Result<Self, BuildError> {
        let mut limits = Vec::with_capacity(config.rate_limits.len());
        for limit in &config.rate_limits {
            let kept = previous
                .and_then(|p| p.limits.iter().find(|l| l.config == *limit))
                .cloned();
            limits.push(match kept {
                Some(kept) => kept,
                None => Arc::new(Limit::build(limit, config, metrics)?),
            });
        }
        Ok(Self { limits })
    }

    /// Whether any limit applies to `direction`.
    pub fn any(&self, direction: LimitDirection) -> bool {
        self.limits.iter().any(|l| l.direction == direction)
    }

    /// Checks every limit that applies, in config order; the first that
    /// refuses decides (a request takes a token from each limit before).
    pub async fn check(&self, direction: LimitDirection, subject: &Subject<'_>) -> Option<Limited> {
        for limit in &self.limits {
            if limit.applies(direction, subject) {
                if let Some(limited) = limit.check(subject).await {
                    return Some(limited);
                }
            }
        }
        None
    }
}

/// `"name";q=Q;w=W`: Q requests per W seconds, the rate in whole numbers.
fn policy_header(quoted: &str, rate: Rate) -> HeaderValue {
    let window = (1.0 / rate.per_second).ceil().max(1.0);
    let quota = (rate.per_second * window).round().max(1.0);
    HeaderValue::from_str(&format!("{quoted};q={quota};w={window}"))
        .unwrap_or_else(|_| HeaderValue::from_static("\"limit\""))
}

/// FNV-1a: the same hash in every replica (std's hasher is seeded per
/// process), for long keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_say_the_rate_in_whole_numbers() {
        let header = |per_second, burst| policy_header("\"api\"", Rate::new(per_second, burst));
        assert_eq!(header(100.0, Some(20)), "\"api\";q=100;w=1");
        assert_eq!(header(0.5, None), "\"api\";q=1;w=2");
        assert_eq!(header(2.5, None), "\"api\";q=3;w=1");
    }

    #[test]
    fn long_keys_hash_the_same_everywhere() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
