//! `rate_limits:` token buckets that protect this service from its callers
//! (inbound) and other services from this app (outbound), per caller, per
//! client key, and across replicas through Redis.

use serde::{Deserialize, Serialize};

use super::{CallerPattern, HumanDuration, Located};

/// One named limit.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limit's name: in metrics, logs and the `RateLimit` headers.
    pub name: Located<String>,
    /// `inbound` (callers of this service), `outbound` (this app's calls)
    /// or `gateway` (clients of the edge gateway).
    pub direction: Located<LimitDirection>,
    /// Outbound and gateway: only requests to this destination (default:
    /// all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Located<String>>,
    /// Outbound and gateway: only requests on this route (its `name`;
    /// default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Located<String>>,
    /// Whose bucket a request takes from: `none` (one bucket for all, the
    /// default), `caller` (the calling workload's identity; inbound),
    /// `client-address` (the client's IP; at the gateway, as
    /// `trusted_hops` tells it), `{ header: NAME }` (the value of a request
    /// header, such as an API key; requests without it share one bucket),
    /// or `{ claim: NAME }` (gateway: a claim of the verified token, such as
    /// `sub`; requests without a token share one bucket).
    #[serde(default)]
    pub key: Located<LimitKey>,
    /// Requests per second, the bucket's refill rate.
    pub rate: Located<f64>,
    /// Requests allowed at once above the rate: the bucket's size
    /// (default: one second of `rate`, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<Located<u32>>,
    /// Keys with their own rate and burst (for `key: caller`, a caller
    /// pattern like the authorization policy's; for a header, its value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<LimitOverride>,
    /// Count and log what would be limited, but let it through.
    #[serde(default)]
    pub shadow: bool,
    /// Most keys tracked at once; a new key beyond it shares one overflow
    /// bucket (default 100000), so hostile keys cannot exhaust memory.
    #[serde(default = "defaults::max_keys")]
    pub max_keys: Located<usize>,
    /// Share the budget with the other replicas of this service through
    /// Redis. Absent: each sidecar enforces the whole limit itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalLimitConfig>,
}

/// Which side of the sidecar a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitDirection {
    /// Requests from callers, before they reach the app.
    Inbound,
    /// Requests from the app, before they leave for a destination.
    Outbound,
    /// Requests from the gateway's clients, after their token is checked.
    Gateway,
}

/// Whose bucket a request takes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitKey {
    /// One bucket for every request.
    #[default]
    None,
    /// The calling workload's SPIFFE id (inbound).
    Caller,
    /// The client's IP address.
    ClientAddress,
    /// A request header's value.
    Header(String),
    /// A claim of the verified token (gateway).
    Claim(String),
}

/// A key with its own rate.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverride {
    /// For `key: caller`: which callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<CallerPattern>,
    /// For `key: { header: ... }`, `key: { claim: ... }` and
    /// `key: client-address`: the key's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Their rate.
    pub rate: Located<f64>,
    /// Their burst (default: one second of `rate`, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<Located<u32>>,
}

/// A limit shared by replicas through Redis.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalLimitConfig {
    /// `redis://HOST:PORT[/DB]` of the Redis every replica uses.
    pub redis: Located<String>,
    /// While Redis cannot be reached: `local` (default: this sidecar
    /// enforces its share, the limit divided by the replicas last seen),
    /// `allow` (fail open) or `deny` (fail closed).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// How often tokens are reserved from Redis in batches (default
    /// 50ms). Shorter: closer to the limit, more Redis calls.
    #[serde(default = "defaults::sync_interval")]
    pub sync_interval: HumanDuration,
    /// Longest wait for Redis before it counts as unreachable (default
    /// 100ms).
    #[serde(default = "defaults::redis_timeout")]
    pub timeout: HumanDuration,
    /// Replicas assumed before Redis has said how many there are, for the
    /// local share (default 1).
    #[serde(default = "defaults::replicas")]
    pub replicas: Located<u32>,
}

/// What a global limit does while Redis is unreachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Enforce this replica's share locally.
    #[default]
    Local,
    /// Let everything through.
    Allow,
    /// Refuse everything.
    Deny,
}

mod defaults {
    use super::*;

    pub fn max_keys() -> Located<usize> {
        Located::new(100_000)
    }
    /// 20 Redis calls a second per replica and limit: cheap for Redis, and
    /// a reservation covers 50ms of traffic.
    pub fn sync_interval() -> HumanDuration {
        HumanDuration::from_millis(50)
    }
    pub fn redis_timeout() -> HumanDuration {
        HumanDuration::from_millis(100)
    }
    pub fn replicas() -> Located<u32> {
        Located::new(1)
    }
}
