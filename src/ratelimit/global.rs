//! A limit shared by the replicas of a service through Redis, kept off the
//! request path: a background task reserves tokens from one bucket in
//! Redis in batches, every `sync_interval`, and requests spend the tokens
//! this replica holds.
//!
//! - A batch is sized from the demand of the last interval, so a busy
//!   replica holds more; Redis grants what its bucket has, so replicas
//!   together never take more than `rate × time + burst` from it.
//! - Tokens are spent at most `HOLD` after Redis granted them (older ones
//!   are dropped), so in any window replicas admit at most one `HOLD`'s
//!   worth of tokens more than the limit; tokens held and not spent are
//!   lost, so a spread-out trickle gets somewhat less than the limit.
//! - A request that finds no tokens while Redis still had some (demand
//!   outgrew the batch) asks for a sync at once and waits for it, at most
//!   the Redis timeout; one that finds Redis empty is refused at once.
//! - Each sync also says "I am here" in a sorted set, so every replica
//!   knows how many there are: while Redis is unreachable each enforces
//!   its share (`on_failure: local`), or lets all through, or none.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::bucket::{Rate, Take};
use super::keyed::KeyedBuckets;
use crate::config::OnFailure;
use crate::metrics::LimitMetrics;

/// The longest wait for a token Redis may announce: the slowest rate a
/// config may set is one a week.
const LONGEST_WAIT: Duration = Duration::from_secs(7 * 86400);
/// The longest tokens are held before they are spent or dropped.
const HOLD: Duration = Duration::from_secs(1);

/// How long a replica counts as present after its last sync.
const PRESENCE: Duration = Duration::from_secs(10);

/// Reserves tokens for many buckets at once, and says this replica is
/// here. KEYS[1]: the replicas' sorted set; KEYS[2..]: buckets. ARGV[1]:
/// this replica; ARGV[2]: presence in ms; then rate, burst, want for each
/// bucket. Returns the replica count, then grant and ms-until-a-token for
/// each bucket. Redis's own clock decides, so replicas' clocks don't matter.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local presence = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - presence)
redis.call('PEXPIRE', KEYS[1], presence * 2)
local out = { redis.call('ZCARD', KEYS[1]) }
for i = 2, #KEYS do
  local a = 3 + (i - 2) * 3
  local rate, burst, want = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local b = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  local grant = math.min(want, math.floor(tokens))
  tokens = tokens - grant
  redis.call('HSET', KEYS[i], 't', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 1000)
  out[#out + 1] = grant
  out[#out + 1] = math.ceil(math.max(0, 1 - tokens) / rate * 1000)
end
return out
";

/// A global limit's settings.
#[derive(Debug, Clone)]
pub struct GlobalSettings {
    /// The Redis client (the URL is checked when the config loads).
    pub client: redis::Client,
    /// The prefix of every key of this limit.
    pub prefix: String,
    /// What to do while Redis is unreachable.
    pub on_failure: OnFailure,
    /// How often tokens are reserved.
    pub interval: Duration,
    /// Longest wait for Redis.
    pub timeout: Duration,
    /// Replicas assumed until Redis says.
    pub replicas: u32,
    /// Most keys tracked.
    pub max_keys: usize,
}

/// The replica's side of a global limit.
#[derive(Debug)]
pub struct Global {
    settings: GlobalSettings,
    shares: Mutex<HashMap<Box<str>, Share>>,
    /// The local fallback while Redis is unreachable.
    fallback: KeyedBuckets,
    degraded: AtomicBool,
    replicas: AtomicU32,
    /// Wakes the task for an early sync.
    wake: Notify,
    /// Bumped after every sync, for requests waiting on one.
    synced: watch::Sender<u64>,
    metrics: LimitMetrics,
}

/// This replica's part of one bucket.
#[derive(Debug)]
struct Share {
    rate: Rate,
    /// Tokens granted and not yet spent.
    in_hand: u32,
    /// When they were granted.
    granted_at: Instant,
    /// Takes since the last sync, allowed or not.
    demand: u32,
    /// Redis's bucket was empty at the last sync: refuse until then.
    empty_until: Option<Instant>,
    /// A request is waiting for tokens.
    wanted: bool,
}

impl Global {
    /// Starts the limit and its sync task, which ends with the last
    /// handle.
    pub fn start(settings: GlobalSettings, metrics: LimitMetrics) -> Arc<Self> {
        let global = Arc::new(Self {
            fallback: KeyedBuckets::new(settings.max_keys),
            replicas: AtomicU32::new(settings.replicas.max(1)),
            settings,
            shares: Mutex::default(),
            degraded: AtomicBool::new(false),
            wake: Notify::new(),
            synced: watch::channel(0).0,
            metrics,
        });
        tokio::spawn(sync_loop(Arc::downgrade(&global)));
        global
    }

    /// Whether Redis is unreachable and the fallback decides.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Takes a token for `key`, whose bucket refills at `rate` across all
    /// replicas.
    pub async fn take(&self, key: &str, rate: Rate) -> Take {
        if self.degraded() {
            return self.fallback(key, rate);
        }
        let mut synced = self.synced.subscribe();
        match self.take_held(key, rate) {
            Held::Took(take) => return take,
            Held::Wait => {}
        }
        // Demand outgrew the batch: sync now, and wait for it (bounded).
        self.wake.notify_one();
        let waited = tokio::time::timeout(self.settings.timeout, synced.changed()).await;
        if self.degraded() {
            return self.fallback(key, rate);
        }
        match (waited, self.take_held(key, rate)) {
            (Ok(Ok(())), Held::Took(take)) => take,
            _ => Take::Limited {
                wait: self.settings.interval,
            },
        }
    }

    fn take_held(&self, key: &str, rate: Rate) -> Held {
        let now = Instant::now();
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        let key = if shares.contains_key(key) || shares.len() < self.settings.max_keys {
            key
        } else {
            "\0overflow"
        };
        let share = shares.entry(key.into()).or_insert_with(|| Share {
            rate,
            in_hand: 0,
            granted_at: now,
            demand: 0,
            empty_until: None,
            wanted: false,
        });
        share.rate = rate;
        share.demand = share.demand.saturating_add(1);
        if share.in_hand > 0 && now.duration_since(share.granted_at) > HOLD {
            share.in_hand = 0;
        }
        if share.in_hand > 0 {
            share.in_hand -= 1;
            return Held::Took(Take::Allowed {
                remaining: share.in_hand,
            });
        }
        match share.empty_until {
            Some(until) if until > now => Held::Took(Take::Limited { wait: until - now }),
            _ => {
                share.wanted = true;
                Held::Wait
            }
        }
    }

    fn fallback(&self, key: &str, rate: Rate) -> Take {
        match self.settings.on_failure {
            OnFailure::Allow => Take::Allowed { remaining: 0 },
            OnFailure::Deny => Take::Limited {
                wait: Duration::from_secs(1),
            },
            OnFailure::Local => {
                let replicas = self.replicas.load(Ordering::Relaxed);
                self.fallback
                    .take(key, rate.share(replicas), Instant::now())
            }
        }
    }

    /// What to ask Redis for: each bucket with demand or a waiting
    /// request, and how many tokens. Idle buckets with nothing held are
    /// forgotten.
    fn batch(&self) -> Vec<(Box<str>, Rate, u32)> {
        let now = Instant::now();
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        shares.retain(|_, s| s.demand > 0 || s.wanted || s.in_hand > 0);
        let mut batch = Vec::with_capacity(shares.len());
        for (key, share) in shares.iter_mut() {
            if now.duration_since(share.granted_at) > HOLD {
                share.in_hand = 0;
            }
            // Enough for the last interval's demand and half again,
            // never more than the bucket holds.
            let target = (share.demand.saturating_mul(3) / 2).max(u32::from(share.wanted));
            let want = target.saturating_sub(share.in_hand).min(share.rate.burst);
            if want > 0 {
                batch.push((key.clone(), share.rate, want));
            }
            share.demand = 0;
        }
        batch
    }

    /// Puts what Redis granted in hand.
    fn granted(&self, replicas: u32, grants: &[(Box<str>, u32, u32, u64)]) {
        let now = Instant::now();
        self.replicas.store(replicas.max(1), Ordering::Relaxed);
        self.metrics.replicas(replicas);
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, want, grant, wait_ms) in grants {
            if let Some(share) = shares.get_mut(key) {
                share.in_hand = share.in_hand.saturating_add(*grant);
                share.granted_at = now;
                share.wanted = false;
                // Redis's word, bounded: no configurable rate waits longer.
                let wait = Duration::from_millis(*wait_ms).min(LONGEST_WAIT);
                share.empty_until = (grant < want).then(|| now + wait);
            }
        }
    }

    fn set_degraded(&self, degraded: bool, why: &dyn std::fmt::Display) {
        if self.degraded.swap(degraded, Ordering::Relaxed) == degraded {
            return;
        }
        self.metrics.degraded(degraded);
        let name = self.metrics.name();
        if degraded {
            warn!(
                limit = name,
                on_failure = ?self.settings.on_failure,
                replicas = self.replicas.load(Ordering::Relaxed),
                "global rate limit: Redis unreachable ({why}); using the fallback until it is back"
            );
        } else {
            info!(limit = name, "global rate limit: Redis is back");
        }
    }
}

enum Held {
    Took(Take),
    Wait,
}

/// Syncs every interval (sooner when a request waits), while the limit
/// lives. While Redis is unreachable it retries once a second.
async fn sync_loop(global: Weak<Global>) {
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let script = redis::Script::new(RESERVE);
    let id = format!("{:016x}-{}", fastrand::u64(..), std::process::id());
    loop {
        let (interval, wake) = {
            let Some(g) = global.upgrade() else { return };
            let pause = if g.degraded() {
                Duration::from_secs(1)
            } else {
                g.settings.interval
            };
            (pause, g)
        };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.wake.notified() => {}
        }
        drop(wake);
        let Some(g) = global.upgrade() else { return };
        match sync(&g, &mut connection, &script, &id).await {
            Ok(()) => g.set_degraded(false, &""),
            Err(e) => {
                connection = None;
                g.set_degraded(true, &e);
            }
        }
        g.synced.send_modify(|n| *n += 1);
    }
}

async fn sync(
    global: &Global,
    connection: &mut Option<redis::aio::MultiplexedConnection>,
    script: &redis::Script,
    id: &str,
) -> Result<(), String> {
    let settings = &global.settings;
    let timeout = settings.timeout;
    if connection.is_none() {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let connected = settings
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        *connection = Some(connected);
    }
    let Some(conn) = connection.as_mut() else {
        return Err("no connection".to_owned());
    };
    let batch = global.batch();
    let mut invocation = script.key(format!("{}~replicas", settings.prefix));
    invocation.arg(id).arg(PRESENCE.as_millis() as u64);
    for (key, rate, want) in &batch {
        invocation
            .key(format!("{}{key}", settings.prefix))
            .arg(rate.per_second)
            .arg(rate.burst)
            .arg(*want);
    }
    let reply: Vec<u64> = tokio::time::timeout(timeout, invocation.invoke_async(conn))
        .await
        .map_err(|_| format!("no answer within {}", humantime::format_duration(timeout)))?
        .map_err(|e| e.to_string())?;
    let (replicas, grants) = read_reply(&reply, batch)?;
    global.granted(replicas, &grants);
    Ok(())
}

/// The longest wait Redis may announce for an empty bucket; a longer one
/// (a slow rate, or a broken reply) is read as this.
const MAX_EMPTY_WAIT_MS: u64 = 60 * 60 * 1000;

/// A grant: the bucket, what was asked, what was granted, and how long
/// until the bucket has tokens again (ms) when it gave less.
type Grant = (Box<str>, u32, u32, u64);

/// Reads the script's reply: the replicas, then two numbers per bucket
/// asked for (tokens granted, ms until more). Any other shape is an error
/// (the limit falls back as when Redis is unreachable), never a panic;
/// numbers out of range are clamped: a grant to what was asked, a wait to
/// an hour.
fn read_reply(
    reply: &[u64],
    batch: Vec<(Box<str>, Rate, u32)>,
) -> Result<(u32, Vec<Grant>), String> {
    let Some((&replicas, answers)) = reply.split_first() else {
        return Err("Redis answered with an empty reply".to_owned());
    };
    if answers.len() != batch.len() * 2 {
        return Err(format!(
            "Redis answered {} values for {} buckets; expected two each",
            answers.len(),
            batch.len()
        ));
    }
    let replicas = u32::try_from(replicas).unwrap_or(u32::MAX).max(1);
    let grants = batch
        .into_iter()
        .zip(answers.chunks_exact(2))
        .map(|((key, _, want), answer)| {
            let grant = u32::try_from(answer[0]).unwrap_or(u32::MAX).min(want);
            (key, want, grant, answer[1].min(MAX_EMPTY_WAIT_MS))
        })
        .collect();
    Ok((replicas, grants))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<(Box<str>, Rate, u32)> {
        let rate = Rate {
            per_second: 10.0,
            burst: 10,
        };
        (0..n).map(|i| (format!("k{i}").into(), rate, 5)).collect()
    }

    #[test]
    fn a_reply_of_any_shape_is_an_answer_or_an_error_never_a_panic() {
        assert!(read_reply(&[], batch(1)).is_err(), "empty");
        assert!(read_reply(&[2], batch(1)).is_err(), "no grants");
        assert!(read_reply(&[2, 1, 0, 7], batch(1)).is_err(), "too many");
        assert!(read_reply(&[2, 1], batch(1)).is_err(), "half a grant");
        let (replicas, grants) = read_reply(&[3, 5, 0, 2, 1500], batch(2)).expect("good");
        assert_eq!(replicas, 3);
        assert_eq!((grants[0].1, grants[0].2, grants[0].3), (5, 5, 0));
        assert_eq!((grants[1].2, grants[1].3), (2, 1500));
    }

    #[test]
    fn numbers_out_of_range_are_clamped() {
        let (replicas, grants) =
            read_reply(&[0, u64::MAX, u64::MAX], batch(1)).expect("well formed");
        assert_eq!(replicas, 1, "at least this replica");
        assert_eq!(grants[0].2, 5, "never more than asked for");
        assert_eq!(grants[0].3, MAX_EMPTY_WAIT_MS);
        let (replicas, _) = read_reply(&[u64::MAX, 0, 0], batch(1)).expect("well formed");
        assert_eq!(replicas, u32::MAX);
    }
}
