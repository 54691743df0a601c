//! Checks of `rate_limits:`.

use std::collections::HashMap;

use super::Report;
use crate::config::{Config, LimitDirection, LimitKey, Position, RateLimitConfig};

pub(super) fn check_rate_limits(config: &Config, r: &mut Report<'_>) {
    let mut names: HashMap<&str, Position> = HashMap::new();
    for limit in &config.rate_limits {
        let name = &limit.name;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            r.error(
                name.position(),
                format!(
                    "rate limit name {:?}: use 1 to 64 letters, digits, '.', '_' or '-'",
                    name.get()
                ),
            );
        }
        if let Some(first) = names.insert(name.as_str(), name.position()) {
            r.error(
                name.position(),
                format!(
                    "rate limit {:?} is defined twice (first at line {})",
                    name.get(),
                    first.line
                ),
            );
        }
        check_rate(
            &format!("rate limit {:?}", name.get()),
            limit.rate.get(),
            limit.rate.position(),
            r,
        );
        check_scope(config, limit, r);
        check_overrides(limit, r);
        if *limit.max_keys.get() == 0 {
            r.error(limit.max_keys.position(), "max_keys must be at least 1");
        }
        if let Some(global) = &limit.global {
            match redis::parse_redis_url(&global.redis) {
                None => r.error(
                    global.redis.position(),
                    format!(
                        "redis {:?} is not a Redis URL; write it like redis://127.0.0.1:6379",
                        global.redis.get()
                    ),
                ),
                // The client is built without TLS (it would bring a second
                // TLS stack and root store): refused here, not at run time.
                Some(url) if url.scheme() == "rediss" => r.error(
                    global.redis.position(),
                    "rediss:// (Redis over TLS) is not supported: write redis://, and keep \
                     Redis on a private network",
                ),
                Some(_) => {}
            }
            if global.sync_interval.0.is_zero() || global.timeout.0.is_zero() {
                r.error(
                    global.redis.position(),
                    "global.sync_interval and global.timeout must be above zero",
                );
            }
            if *global.replicas.get() == 0 {
                r.error(
                    global.replicas.position(),
                    "global.replicas must be at least 1",
                );
            }
        }
    }
}

/// The slowest rate: one request a week. Slower is a typo, and a wait
/// for the next token must stay a duration a client can be told.
const MIN_RATE: f64 = 1.0 / (7.0 * 86400.0);

fn check_rate(what: &str, rate: &f64, at: Position, r: &mut Report<'_>) {
    if !(rate.is_finite() && (MIN_RATE..=1e9).contains(rate)) {
        r.error(
            at,
            format!(
                "{what}: rate {rate} must be from {MIN_RATE:.2e} (one a week) to 1e9 requests \
                 per second"
            ),
        );
    }
}

/// Where the limit applies: keys and filters that make sense for its
/// direction, and destinations and routes that exist.
fn check_scope(config: &Config, limit: &RateLimitConfig, r: &mut Report<'_>) {
    let direction = *limit.direction.get();
    if direction != LimitDirection::Inbound && *limit.key.get() == LimitKey::Caller {
        r.error(
            limit.key.position(),
            "key: caller applies to inbound limits (outbound, the caller is always this app; \
             at the gateway, key by a token claim or the client address)",
        );
    }
    if direction != LimitDirection::Gateway && matches!(limit.key.get(), LimitKey::Claim(_)) {
        r.error(
            limit.key.position(),
            "key: { claim: ... } applies to gateway limits, where tokens are verified",
        );
    }
    if direction == LimitDirection::Gateway && config.gateway.is_none() {
        r.error(
            limit.direction.position(),
            "a gateway rate limit needs `gateway:`",
        );
    }
    if let LimitKey::Header(header) = limit.key.get() {
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            r.error(
                limit.key.position(),
                format!("{header:?} is not a valid header name"),
            );
        }
    }
    let outbound = config.outbound.as_ref();
    for (filter, what) in [(&limit.service, "service"), (&limit.route, "route")] {
        let Some(filter) = filter else { continue };
        if direction == LimitDirection::Inbound {
            r.error(
                filter.position(),
                format!("`{what}` selects outbound requests; an inbound limit covers every caller"),
            );
            continue;
        }
        let routes = match direction {
            LimitDirection::Gateway => config.gateway.as_ref().map(|g| &g.routes),
            _ => outbound.map(|o| &o.routes),
        };
        let known = match what {
            "service" => outbound.is_some_and(|o| o.services.contains_key(filter.as_str())),
            _ => routes.is_some_and(|routes| routes.iter().any(|rt| rt.label() == *filter.get())),
        };
        if !known {
            r.error(
                filter.position(),
                format!("rate limit for undefined {what} {:?}", filter.get()),
            );
        }
    }
    if direction == LimitDirection::Inbound && config.inbound.is_none() {
        r.error(
            limit.direction.position(),
            "an inbound rate limit needs `inbound:`",
        );
    }
}

fn check_overrides(limit: &RateLimitConfig, r: &mut Report<'_>) {
    for o in &limit.overrides {
        check_rate("override", o.rate.get(), o.rate.position(), r);
        let at = o.rate.position();
        match (&o.caller, &o.value, limit.key.get()) {
            (Some(_), Some(_), _) => r.error(at, "give an override `caller` or `value`, not both"),
            (Some(caller), None, LimitKey::Caller) => {
                if let Err(e) = caller.check() {
                    r.error(at, e);
                }
            }
            (None, Some(_), LimitKey::Header(_) | LimitKey::Claim(_) | LimitKey::ClientAddress) => {
            }
            (Some(_), _, _) => r.error(at, "a `caller` override needs key: caller"),
            (None, Some(_), _) => r.error(
                at,
                "a `value` override needs key: { header: NAME }, { claim: NAME } or \
                 client-address",
            ),
            (None, None, _) => r.error(at, "an override needs `caller` or `value`"),
        }
    }
}
