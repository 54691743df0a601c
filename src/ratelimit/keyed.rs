//! A bucket per key (caller, client address, header value), bounded: full
//! buckets are forgotten (a new one starts full, so nothing changes), and
//! past `max_keys` new keys share one overflow bucket, so a client that
//! invents keys cannot exhaust memory or escape the limit.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

use super::bucket::{Bucket, Rate, Take};

/// The key new keys share once the map is full.
const OVERFLOW: &str = "\0overflow";

/// Buckets by key.
#[derive(Debug)]
pub struct KeyedBuckets {
    buckets: Mutex<Map>,
    max_keys: usize,
}

#[derive(Debug, Default)]
struct Map {
    by_key: HashMap<Box<str>, (Bucket, Rate)>,
    /// Takes since the last sweep.
    since_sweep: usize,
}

impl KeyedBuckets {
    /// Holds at most `max_keys` buckets (and the overflow one).
    pub fn new(max_keys: usize) -> Self {
        Self {
            buckets: Mutex::default(),
            max_keys: max_keys.max(1),
        }
    }

    /// Takes a token from `key`'s bucket, which refills at `rate`.
    pub fn take(&self, key: &str, rate: Rate, now: Instant) -> Take {
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        map.since_sweep += 1;
        if map.since_sweep >= self.max_keys.min(4096) {
            map.sweep(now);
        }
        let key = if map.by_key.contains_key(key) || map.by_key.len() < self.max_keys {
            key
        } else {
            OVERFLOW
        };
        if let Some((bucket, _)) = map.by_key.get_mut(key) {
            return bucket.take(rate, now);
        }
        let mut bucket = Bucket::full(rate, now);
        let took = bucket.take(rate, now);
        map.by_key.insert(key.into(), (bucket, rate));
        took
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_key
            .len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Map {
    /// Forgets the buckets that are full again.
    fn sweep(&mut self, now: Instant) {
        self.by_key
            .retain(|_, (bucket, rate)| !bucket.is_full(*rate, now));
        self.since_sweep = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_have_their_own_buckets() {
        let buckets = KeyedBuckets::new(100);
        let rate = Rate::new(1.0, Some(1));
        let now = Instant::now();
        assert!(matches!(buckets.take("a", rate, now), Take::Allowed { .. }));
        assert!(matches!(buckets.take("a", rate, now), Take::Limited { .. }));
        assert!(matches!(buckets.take("b", rate, now), Take::Allowed { .. }));
    }

    #[test]
    fn past_the_cap_new_keys_share_one_bucket_and_full_ones_are_forgotten() {
        let buckets = KeyedBuckets::new(3);
        let rate = Rate::new(1.0, Some(1));
        let now = Instant::now();
        for key in ["a", "b", "c"] {
            assert!(matches!(buckets.take(key, rate, now), Take::Allowed { .. }));
        }
        // "d" and "e" share the overflow bucket: one token between them.
        assert!(matches!(buckets.take("d", rate, now), Take::Allowed { .. }));
        assert!(matches!(buckets.take("e", rate, now), Take::Limited { .. }));
        assert_eq!(buckets.len(), 4);
        // A second later every bucket is full again: the sweep on the next
        // takes forgets them.
        let later = now + Duration::from_secs(2);
        for _ in 0..3 {
            buckets.take("a", rate, later);
        }
        assert_eq!(buckets.len(), 1, "only a's bucket, just emptied");
    }
}
