//! The token bucket: `rate` tokens a second flow into a bucket that holds
//! at most `burst`; a request takes one, or waits for the next.
//!
//! Pure arithmetic on instants the caller passes in, so it is tested with
//! exact times.

use std::time::Duration;

use tokio::time::Instant;

/// A rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens a second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

impl Rate {
    /// `per_second` with `burst`, or one second's worth (at least 1).
    pub fn new(per_second: f64, burst: Option<u32>) -> Self {
        let burst = burst.unwrap_or_else(|| per_second.ceil().max(1.0) as u32);
        Self {
            per_second,
            burst: burst.max(1),
        }
    }

    /// This rate divided among `parts` (a replica's share), each part
    /// keeping at least one token of burst.
    pub fn share(self, parts: u32) -> Self {
        let parts = parts.max(1);
        Self {
            per_second: self.per_second / f64::from(parts),
            burst: (self.burst / parts).max(1),
        }
    }

    /// How long one token takes to flow in.
    pub fn interval(self) -> Duration {
        seconds(1.0 / self.per_second)
    }
}

/// `secs` as a duration; one too long to hold (a rate so slow it cannot
/// be configured, shared among many replicas) is the longest there is.
fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// What taking a token said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    /// Taken; this many whole tokens are left.
    Allowed {
        /// Whole tokens left.
        remaining: u32,
    },
    /// None left; the next one comes after this wait.
    Limited {
        /// Until a token is there.
        wait: Duration,
    },
}

/// One bucket's state.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    /// Takes one token at `now`, if there is one.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Take {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Take::Allowed {
                remaining: self.tokens as u32,
            }
        } else {
            let missing = 1.0 - self.tokens;
            Take::Limited {
                wait: seconds(missing / rate.per_second),
            }
        }
    }

    /// Whether the bucket is full again at `now`, so that forgetting it
    /// changes nothing (a new one starts full).
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= f64::from(rate.burst)
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_slowest_rate_waits_without_overflowing() {
        let now = Instant::now();
        // Below what a config may say (a share among many replicas).
        let rate = Rate::new(1e-300, Some(1));
        let mut bucket = Bucket::full(rate, now);
        assert!(matches!(bucket.take(rate, now), Take::Allowed { .. }));
        let Take::Limited { wait } = bucket.take(rate, now) else {
            panic!("the one token was taken");
        };
        assert_eq!(wait, Duration::MAX);
        assert_eq!(rate.interval(), Duration::MAX);
    }

    #[test]
    fn a_full_bucket_allows_the_burst_then_limits() {
        let rate = Rate::new(10.0, Some(3));
        let start = Instant::now();
        let mut bucket = Bucket::full(rate, start);
        for left in [2, 1, 0] {
            assert_eq!(bucket.take(rate, start), Take::Allowed { remaining: left });
        }
        assert_eq!(bucket.take(rate, start), Take::Limited { wait: ms(100) });
        // Half a token later, half a token is missing.
        assert_eq!(
            bucket.take(rate, start + ms(50)),
            Take::Limited { wait: ms(50) }
        );
        assert_eq!(
            bucket.take(rate, start + ms(100)),
            Take::Allowed { remaining: 0 }
        );
    }

    #[test]
    fn tokens_flow_at_the_rate_and_stop_at_the_burst() {
        let rate = Rate::new(100.0, Some(5));
        let start = Instant::now();
        let mut bucket = Bucket::full(rate, start);
        // Over 10 s, taking as fast as possible: burst + rate × time.
        let mut allowed = 0;
        for step in 0..=100_000u64 {
            let now = start + Duration::from_micros(step * 100);
            if matches!(bucket.take(rate, now), Take::Allowed { .. }) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5 + 1000);
        // Idle for a minute: full again, never fuller.
        let later = start + Duration::from_secs(70);
        assert!(bucket.is_full(rate, later));
        assert_eq!(bucket.take(rate, later), Take::Allowed { remaining: 4 });
    }

    #[test]
    fn defaults_and_shares() {
        assert_eq!(Rate::new(100.0, None).burst, 100);
        assert_eq!(Rate::new(0.5, None).burst, 1);
        let share = Rate::new(100.0, Some(20)).share(4);
        assert_eq!((share.per_second, share.burst), (25.0, 5));
        assert_eq!(Rate::new(10.0, Some(1)).share(3).burst, 1);
        assert_eq!(Rate::new(4.0, None).interval(), ms(250));
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_drives_the_bucket() {
        let rate = Rate::new(2.0, Some(1));
        let mut bucket = Bucket::full(rate, Instant::now());
        assert!(matches!(
            bucket.take(rate, Instant::now()),
            Take::Allowed { .. }
        ));
        let Take::Limited { wait } = bucket.take(rate, Instant::now()) else {
            panic!("the bucket is empty");
        };
        assert_eq!(wait, ms(500));
        tokio::time::sleep(wait).await;
        assert!(matches!(
            bucket.take(rate, Instant::now()),
            Take::Allowed { .. }
        ));
    }
}
