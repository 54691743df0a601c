//! Tokens verified recently, so a client's next request with the same
//! token skips the signature check, which is nine tenths of a gateway
//! request's cost (an Ed25519 or RSA verification, the JSON parsed): the
//! idea of Envoy's `jwt_cache_config`. An entry lives until its token
//! expires (with the clock skew allowed) or the keys change; the cache is
//! bounded, and a token is compared whole, never by a hash alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::jwt::{Verified, Verifier};

/// Most tokens kept: a few hundred KiB at most (tokens are about a
/// kilobyte), and more active clients than a gateway replica usually sees
/// within one token's life.
pub const CAPACITY: usize = 1024;

/// Verified tokens and what they said.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

#[derive(Debug)]
struct Entry {
    verified: Verified,
    /// Valid until then (`exp` plus the leeway).
    until: SystemTime,
    /// The keys that verified it; other keys, another check.
    keys: Arc<Verifier>,
}

impl TokenCache {
    /// What `token` said when `keys` verified it, if that was recently
    /// enough to hold at `now`.
    pub fn get(&self, token: &str, keys: &Arc<Verifier>, now: SystemTime) -> Option<Verified> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(token)?;
        (now <= entry.until && Arc::ptr_eq(&entry.keys, keys)).then(|| entry.verified.clone())
    }

    /// Keeps what `keys` verified of `token`, until its `exp` plus
    /// `leeway`. A token without a numeric `exp` is not kept.
    pub fn put(
        &self,
        token: &str,
        verified: &Verified,
        keys: &Arc<Verifier>,
        leeway: Duration,
        now: SystemTime,
    ) {
        let Some(exp) = verified
            .claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
        else {
            return;
        };
        let until = UNIX_EPOCH + Duration::from_secs(exp) + leeway;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY && !entries.contains_key(token) {
            entries.retain(|_, e| now <= e.until && Arc::ptr_eq(&e.keys, keys));
            if entries.len() >= CAPACITY {
                // Still full of live tokens: make room for the newest,
                // dropping any one.
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(
            token.into(),
            Entry {
                verified: verified.clone(),
                until,
                keys: keys.clone(),
            },
        );
    }

    /// Tokens kept.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::Expect;

    fn keys() -> Arc<Verifier> {
        Arc::new(Verifier::new(Expect {
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::ZERO,
        }))
    }

    fn verified(exp: u64) -> Verified {
        Verified {
            claims: serde_json::json!({ "sub": "alice", "exp": exp }),
        }
    }

    #[test]
    fn kept_until_expiry_and_only_for_the_same_keys() {
        let cache = TokenCache::default();
        let (keys, other) = (keys(), keys());
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        cache.put("t1", &verified(1100), &keys, Duration::from_secs(60), now);
        assert_eq!(cache.get("t1", &keys, now), Some(verified(1100)));
        assert_eq!(cache.get("t2", &keys, now), None, "another token");
        assert_eq!(cache.get("t1", &other, now), None, "other keys");
        let late = UNIX_EPOCH + Duration::from_secs(1161);
        assert_eq!(cache.get("t1", &keys, late), None, "expired, leeway too");
        let just = UNIX_EPOCH + Duration::from_secs(1160);
        assert!(cache.get("t1", &keys, just).is_some(), "within the leeway");
    }

    #[test]
    fn bounded() {
        let cache = TokenCache::default();
        let keys = keys();
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        for i in 0..CAPACITY * 3 {
            cache.put(
                &format!("t{i}"),
                &verified(2000),
                &keys,
                Duration::ZERO,
                now,
            );
        }
        assert_eq!(cache.len(), CAPACITY);
        // The newest is always kept.
        let newest = format!("t{}", CAPACITY * 3 - 1);
        assert!(cache.get(&newest, &keys, now).is_some());
        // Without exp: not kept.
        let fresh = TokenCache::default();
        let no_exp = Verified {
            claims: serde_json::json!({ "sub": "x" }),
        };
        fresh.put("t", &no_exp, &keys, Duration::ZERO, now);
        assert!(fresh.is_empty());
    }
}
