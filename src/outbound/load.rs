//! How busy and how fast an endpoint is, for the load balancer: requests in
//! flight, and a peak-sensitive moving average of response time (the
//! peak-EWMA of Finagle and Linkerd: a slow response raises the average at
//! once; fast ones bring it down gradually; with no traffic it decays).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How fast old samples fade.
const DECAY: Duration = Duration::from_secs(10);
/// The guess for an endpoint never measured (Linkerd's default).
const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// The load of one endpoint.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicUsize,
    ewma: Mutex<Ewma>,
}

#[derive(Debug, Clone, Copy)]
struct Ewma {
    rtt_ns: f64,
    updated: Instant,
}

impl Ewma {
    fn decayed(self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.rtt_ns * (-elapsed / DECAY.as_secs_f64()).exp()
    }
}

impl Default for Load {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl Load {
    /// Nothing in flight; the default latency guess.
    pub fn new(now: Instant) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            ewma: Mutex::new(Ewma {
                rtt_ns: DEFAULT_RTT.as_nanos() as f64,
                updated: now,
            }),
        }
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A request starts; it ends when the guard is dropped, or with
    /// [`Started::finish`] and its response time.
    pub fn start(&self) -> Started<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Started { load: self }
    }

    /// The latency estimate in milliseconds (for the admin view).
    pub fn latency_ms(&self, now: Instant) -> f64 {
        let ewma = *self.ewma.lock().unwrap_or_else(PoisonError::into_inner);
        ewma.decayed(now) / 1e6
    }

    /// Peak-EWMA cost: expected latency times the queue it would join.
    pub fn cost(&self, now: Instant) -> f64 {
        let ewma = *self.ewma.lock().unwrap_or_else(PoisonError::into_inner);
        ewma.decayed(now) * (self.in_flight() as f64 + 1.0)
    }

    fn observe(&self, rtt: Duration, now: Instant) {
        let mut ewma = self.ewma.lock().unwrap_or_else(PoisonError::into_inner);
        let rtt = rtt.as_nanos() as f64;
        let current = ewma.decayed(now);
        ewma.rtt_ns = if rtt > current {
            rtt // a peak counts at once
        } else {
            let elapsed = now.saturating_duration_since(ewma.updated).as_secs_f64();
            let weight = (-elapsed / DECAY.as_secs_f64()).exp();
            current * weight + rtt * (1.0 - weight)
        };
        ewma.updated = now;
    }
}

/// A request in flight.
#[derive(Debug)]
pub struct Started<'a> {
    load: &'a Load,
}

impl Started<'_> {
    /// The response came after `rtt`.
    pub fn finish(self, rtt: Duration) {
        self.load.observe(rtt, Instant::now());
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn peaks_count_at_once_and_fade() {
        let load = Load::new(Instant::now());
        let guard = load.start();
        assert_eq!(load.in_flight(), 1);
        guard.finish(Duration::from_millis(500));
        assert_eq!(load.in_flight(), 0);
        let slow = load.latency_ms(Instant::now());
        assert!((slow - 500.0).abs() < 1.0, "a peak is taken whole: {slow}");

        // Without traffic the estimate decays toward zero.
        tokio::time::advance(Duration::from_secs(10)).await;
        let later = load.latency_ms(Instant::now());
        assert!(later < slow / 2.0, "{later}");

        // Fast responses pull it down gradually, not at once.
        tokio::time::advance(Duration::from_secs(1)).await;
        load.start().finish(Duration::from_millis(1));
        let after = load.latency_ms(Instant::now());
        assert!(after > 1.0 && after < later, "{after}");
    }

    #[tokio::test(start_paused = true)]
    async fn cost_grows_with_requests_in_flight() {
        let load = Load::new(Instant::now());
        let idle = load.cost(Instant::now());
        let _a = load.start();
        let _b = load.start();
        assert!((load.cost(Instant::now()) - idle * 3.0).abs() < 1.0);
    }
}
