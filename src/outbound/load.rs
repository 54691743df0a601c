//! How busy and how fast an endpoint is, for the load balancer: requests in
//! flight, and a peak-sensitive moving average of response time (the
//! peak-EWMA of Finagle and Linkerd: a slow response raises the estimate at
//! once; fast ones bring it down gradually).
//!
//! Unlike theirs, an estimate is evidence that ages. While an endpoint goes
//! unmeasured its estimate fades toward the destination's [`Typical`]
//! latency (in ratio terms, with a [`FADE`] time constant), rather than
//! toward zero over ten seconds. An endpoint nobody picks is never measured
//! again, so with Linkerd's decay one slow response, or merely being the
//! slowest of three at start, kept an endpoint out of rotation for half a
//! minute under light load. Here an unmeasured endpoint is as good as the
//! typical one, and a response 100 times slower than typical weighs for
//! about 1.5 s (10 times: about 1 s); under load every endpoint is measured
//! many times a second, so the fade changes nothing there.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How fast an unmeasured endpoint's estimate returns to the typical one:
/// its ratio to typical shrinks as `ratio^exp(-age / FADE)`.
pub const FADE: Duration = Duration::from_millis(500);
/// How fast successive samples are averaged (Linkerd's decay): a fast
/// response after a slow one lowers the estimate by `1 - exp(-gap/DECAY)`
/// of the difference.
const DECAY: Duration = Duration::from_secs(10);
/// The step by which [`Typical`] follows each sample (a streaming median).
const TYPICAL_STEP: f64 = 1.05;

/// The typical latency of a destination's endpoints: a running median of
/// every response time, robust to the few slow samples the balancer exists
/// to avoid. Unset until the first response.
#[derive(Debug, Default)]
pub struct Typical {
    /// Nanoseconds as `f64` bits; 0 while unset.
    bits: AtomicU64,
}

impl Typical {
    /// The typical latency in nanoseconds, once anything was measured.
    pub fn nanos(&self) -> Option<f64> {
        let value = f64::from_bits(self.bits.load(Ordering::Relaxed));
        (value > 0.0).then_some(value)
    }

    /// Follows one more sample: the first sets it, later ones move it one
    /// step toward themselves, so it settles on the median. (Concurrent
    /// updates may lose a step; it follows the next sample instead.)
    fn observe(&self, rtt_ns: f64) {
        let next = match self.nanos() {
            None => rtt_ns,
            Some(current) if rtt_ns > current => current * TYPICAL_STEP,
            Some(current) if rtt_ns < current => current / TYPICAL_STEP,
            Some(current) => current,
        };
        self.bits.store(next.to_bits(), Ordering::Relaxed);
    }
}

/// The load of one endpoint.
#[derive(Debug, Default)]
pub struct Load {
    in_flight: AtomicUsize,
    estimate: Mutex<Option<Estimate>>,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    rtt_ns: f64,
    measured: Instant,
}

impl Estimate {
    /// The estimate at `now`, faded toward `typical` by its age.
    fn faded(self, now: Instant, typical: Option<f64>) -> f64 {
        let Some(typical) = typical else {
            return self.rtt_ns;
        };
        let age = now.saturating_duration_since(self.measured).as_secs_f64();
        let weight = (-age / FADE.as_secs_f64()).exp();
        typical * (self.rtt_ns / typical).powf(weight)
    }
}

impl Load {
    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A request starts; [`Load::end`] must follow.
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// The request that [`Load::begin`] counted ended: its response time
    /// (or how long it was waited for) counts toward this endpoint's
    /// estimate and the destination's typical latency; `None` when it
    /// tells nothing (the client went away).
    pub fn end(&self, sample: Option<Duration>, typical: &Typical) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(rtt) = sample {
            self.observe(rtt, Instant::now(), typical);
        }
    }

    /// The latency estimate in nanoseconds: this endpoint's, faded toward
    /// `typical`; `typical` itself if it was never measured.
    pub fn latency(&self, now: Instant, typical: &Typical) -> Option<f64> {
        let estimate = *self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        match estimate {
            Some(estimate) => Some(estimate.faded(now, typical.nanos())),
            None => typical.nanos(),
        }
    }

    /// Peak-EWMA cost: expected latency times the queue it would join.
    /// Before anything was measured every endpoint's latency is the same
    /// unknown, and the cost is the queue alone.
    pub fn cost(&self, now: Instant, typical: &Typical) -> f64 {
        let latency = self.latency(now, typical).unwrap_or(1.0);
        latency * (self.in_flight() as f64 + 1.0)
    }

    fn observe(&self, rtt: Duration, now: Instant, typical: &Typical) {
        // A response in under a microsecond is a clock artefact; the floor
        // keeps the ratios finite.
        let rtt = (rtt.as_nanos() as f64).max(1_000.0);
        let mut estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        let next = match *estimate {
            None => rtt,
            Some(last) => {
                let current = last.faded(now, typical.nanos());
                if rtt > current {
                    rtt // a peak counts at once
                } else {
                    let gap = now.saturating_duration_since(last.measured).as_secs_f64();
                    let weight = (-gap / DECAY.as_secs_f64()).exp();
                    current * weight + rtt * (1.0 - weight)
                }
            }
        };
        *estimate = Some(Estimate {
            rtt_ns: next,
            measured: now,
        });
        drop(estimate);
        typical.observe(rtt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;

    fn sample(load: &Load, typical: &Typical, ms: u64) {
        load.begin();
        load.end(Some(Duration::from_millis(ms)), typical);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peak_counts_at_once_then_fades_to_typical() {
        let typical = Typical::default();
        let (slow, other) = (Load::default(), Load::default());
        assert_eq!(slow.latency(Instant::now(), &typical), None);
        for _ in 0..20 {
            sample(&other, &typical, 2);
        }
        assert!((typical.nanos().unwrap() / MS - 2.0).abs() < 0.01);
        assert_eq!(
            slow.latency(Instant::now(), &typical),
            typical.nanos(),
            "never measured: as good as typical"
        );

        sample(&slow, &typical, 200);
        let now = Instant::now();
        let peak = slow.latency(now, &typical).unwrap() / MS;
        assert!((peak - 200.0).abs() < 0.1, "a peak is taken whole: {peak}");
        let typical_ms = typical.nanos().unwrap() / MS;
        assert!(typical_ms < 2.2, "one slow sample barely moves typical");

        // Unmeasured, it fades: within 25% of typical after about 1.5 s.
        let at = |ms: u64| {
            slow.latency(now + Duration::from_millis(ms), &typical)
                .unwrap()
                / MS
        };
        assert!(at(1000) > typical_ms * 1.25, "{}", at(1000));
        assert!(at(1600) < typical_ms * 1.25, "{}", at(1600));
        assert!(at(10_000) < typical_ms * 1.001);
    }

    #[tokio::test(start_paused = true)]
    async fn fast_samples_lower_a_fresh_estimate_gradually() {
        let typical = Typical::default();
        let load = Load::default();
        sample(&load, &typical, 100);
        tokio::time::advance(Duration::from_millis(10)).await;
        sample(&load, &typical, 1);
        let after = load.latency(Instant::now(), &typical).unwrap() / MS;
        assert!(after > 50.0, "one fast sample right after: {after}");
    }

    #[tokio::test(start_paused = true)]
    async fn cost_grows_with_requests_in_flight() {
        let typical = Typical::default();
        let load = Load::default();
        assert_eq!(load.cost(Instant::now(), &typical), 1.0, "nothing known");
        sample(&load, &typical, 3);
        let idle = load.cost(Instant::now(), &typical);
        load.begin();
        load.begin();
        assert!((load.cost(Instant::now(), &typical) - idle * 3.0).abs() < 1.0);
        load.end(None, &typical);
        assert_eq!(load.in_flight(), 1);
    }

    #[test]
    fn typical_follows_the_median() {
        let typical = Typical::default();
        // 10% of samples are slow: the median stays with the fast ones.
        for i in 0..2000 {
            typical.observe(if i % 10 == 0 { 500.0 * MS } else { 1.0 * MS });
        }
        let ms = typical.nanos().unwrap() / MS;
        assert!((0.9..1.2).contains(&ms), "{ms}");
        // A lasting shift is followed.
        for _ in 0..200 {
            typical.observe(20.0 * MS);
        }
        assert!((typical.nanos().unwrap() / MS - 20.0).abs() < 1.1);
    }
}
