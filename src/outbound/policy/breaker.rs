//! The error-rate breaker of a destination, with opossum's semantics:
//!
//! ```text
//! Closed --failures > threshold% of >= volume requests in the window--> Open
//! Open --reset_timeout--> HalfOpen (one probe goes through)
//! HalfOpen --probe succeeds--> Closed     HalfOpen --probe fails--> Open
//! ```
//!
//! While it is open, requests fail fast with 503, or get the route's
//! fallback: a fixed response, or the answer of another destination.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{Fallback, RequestContext, ResponseFuture};
use crate::config::BreakerConfig;
use crate::http::outcome::Outcome;
use crate::http::{Body, ProxyError};
use crate::metrics::ResilienceMetrics;

/// Header on fallback responses: `static`, or the destination that answered.
pub const FALLBACK_HEADER: http::HeaderName = http::HeaderName::from_static("pilotfish-fallback");

/// The breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Opens above this share of failures, in percent.
    pub threshold_percent: u32,
    /// Requests needed in the window first.
    pub volume: u32,
    /// Length of one bucket (window / buckets).
    pub bucket: Duration,
    /// Buckets in the window.
    pub buckets: u32,
    /// Time open before a probe.
    pub reset_timeout: Duration,
}

impl BreakerPolicy {
    /// The settings of a config section.
    pub fn from_config(config: &BreakerConfig) -> Self {
        let buckets = (*config.buckets).max(1);
        Self {
            threshold_percent: *config.error_threshold_percent,
            volume: config.volume_threshold,
            bucket: config.window.0 / buckets,
            buckets,
            reset_timeout: config.reset_timeout.0,
        }
    }
}

/// The state, as the admin page and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests fail fast.
    Open,
    /// One probe is allowed.
    HalfOpen,
}

impl BreakerState {
    /// The name shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }

    /// The value of the `pilotfish_breaker_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
enum Mode {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_out: bool },
}

/// The breaker of one destination.
#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    epoch: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    /// (bucket number since epoch, requests, failures), one per bucket.
    window: Vec<(u64, u32, u32)>,
}

/// Permission for one request; records nothing if dropped unused.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    probe: bool,
    recorded: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy, now: Instant) -> Self {
        Self {
            policy,
            epoch: now,
            inner: Mutex::new(Inner {
                mode: Mode::Closed,
                window: vec![(0, 0, 0); policy.buckets as usize],
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.lock().mode {
            Mode::Closed => BreakerState::Closed,
            Mode::Open { until } if now >= until => BreakerState::HalfOpen,
            Mode::Open { .. } => BreakerState::Open,
            Mode::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Lets a request through, or not (open, or the probe is out).
    pub fn admit(self: &Arc<Self>, now: Instant) -> Option<Permit> {
        let mut inner = self.lock();
        let probe = match inner.mode {
            Mode::Closed => false,
            Mode::Open { until } if now >= until => true,
            Mode::HalfOpen { probe_out: false } => true,
            Mode::Open { .. } | Mode::HalfOpen { probe_out: true } => return None,
        };
        if probe {
            inner.mode = Mode::HalfOpen { probe_out: true };
        }
        Some(Permit {
            breaker: self.clone(),
            probe,
            recorded: false,
        })
    }

    /// Records the outcome of a permitted request; returns the new state
    /// when it changed.
    pub fn record(&self, mut permit: Permit, failed: bool, now: Instant) -> Option<BreakerState> {
        permit.recorded = true;
        let mut inner = self.lock();
        if permit.probe {
            inner.mode = if failed {
                Mode::Open {
                    until: now + self.policy.reset_timeout,
                }
            } else {
                inner.window.iter_mut().for_each(|b| *b = (0, 0, 0));
                Mode::Closed
            };
            return Some(if failed {
                BreakerState::Open
            } else {
                BreakerState::Closed
            });
        }
        if !matches!(inner.mode, Mode::Closed) {
            return None; // a straggler from before the breaker opened
        }
        let slot = self.slot(now);
        let index = (slot % u64::from(self.policy.buckets)) as usize;
        let bucket = &mut inner.window[index];
        if bucket.0 != slot {
            *bucket = (slot, 0, 0);
        }
        bucket.1 += 1;
        bucket.2 += u32::from(failed);
        let oldest = slot.saturating_sub(u64::from(self.policy.buckets) - 1);
        let (total, failures) = inner
            .window
            .iter()
            .filter(|b| b.0 >= oldest && b.0 <= slot)
            .fold((0u64, 0u64), |(t, f), b| {
                (t + u64::from(b.1), f + u64::from(b.2))
            });
        let over = failures * 100 > u64::from(self.policy.threshold_percent) * total;
        if failed && total >= u64::from(self.policy.volume) && over {
            inner.mode = Mode::Open {
                until: now + self.policy.reset_timeout,
            };
            return Some(BreakerState::Open);
        }
        None
    }

    fn slot(&self, now: Instant) -> u64 {
        let bucket = self.policy.bucket.as_nanos().max(1);
        (now.saturating_duration_since(self.epoch).as_nanos() / bucket) as u64
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            // The probe was abandoned (the client left): allow another.
            let mut inner = self.breaker.lock();
            if matches!(inner.mode, Mode::HalfOpen { probe_out: true }) {
                inner.mode = Mode::HalfOpen { probe_out: false };
            }
        }
    }
}

/// Puts the breaker in front of the destination.
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    breaker: Option<Arc<Breaker>>,
    service: String,
    metrics: ResilienceMetrics,
}

impl BreakerLayer {
    /// `breaker` is `None` when the destination has none: then the layer
    /// only passes requests on.
    pub fn new(breaker: Option<Arc<Breaker>>, service: &str, metrics: ResilienceMetrics) -> Self {
        Self {
            breaker,
            service: service.to_owned(),
            metrics,
        }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;
    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`BreakerLayer`].
#[derive(Debug, Clone)]
pub struct BreakerService<S> {
    inner: S,
    layer: BreakerLayer,
}

impl<S> Service<Request<Body>> for BreakerService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        let Some(breaker) = self.layer.breaker.clone() else {
            return Box::pin(self.inner.clone().call(req));
        };
        let Some(permit) = breaker.admit(Instant::now()) else {
            return Box::pin(fallback(req, self.layer.clone()));
        };
        let call = self.inner.clone().call(req);
        let layer = self.layer.clone();
        Box::pin(async move {
            let result = call.await;
            let failed = Outcome::of(&result).is_failure();
            if let Some(state) = breaker.record(permit, failed, Instant::now()) {
                layer.metrics.breaker_state(state.gauge());
            }
            result
        })
    }
}

/// The answer while the breaker is open.
async fn fallback(req: Request<Body>, layer: BreakerLayer) -> Result<Response<Body>, ProxyError> {
    let ctx = RequestContext::of(&req).cloned();
    let fallback = ctx
        .as_ref()
        .filter(|c| !c.is_fallback)
        .and_then(|c| c.route.fallback.clone());
    let open = ProxyError::BreakerOpen {
        service: layer.service.clone(),
    };
    match fallback {
        None => {
            layer.metrics.fallback("none");
            Err(open)
        }
        Some(Fallback::Static {
            status,
            headers,
            body,
        }) => {
            layer.metrics.fallback("static");
            let mut response = Response::new(Body::full(body));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
                .headers_mut()
                .insert(FALLBACK_HEADER, http::HeaderValue::from_static("static"));
            Ok(response)
        }
        Some(Fallback::Service(destination)) => {
            layer.metrics.fallback("service");
            let name = destination.name().to_string();
            let mut req = req;
            if let Some(ctx) = req.extensions_mut().get_mut::<RequestContext>() {
                ctx.is_fallback = true;
            }
            let mut response = destination.call(req).await?;
            if let Ok(value) = http::HeaderValue::from_str(&name) {
                response.headers_mut().insert(FALLBACK_HEADER, value);
            }
            Ok(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            threshold_percent: 50,
            volume: 4,
            bucket: Duration::from_secs(1),
            buckets: 10,
            reset_timeout: Duration::from_secs(30),
        }
    }

    fn run(breaker: &Arc<Breaker>, failed: bool, now: Instant) -> Option<BreakerState> {
        let permit = breaker.admit(now).expect("admitted");
        breaker.record(permit, failed, now)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_error_rate_with_volume_then_probes() {
        let now = Instant::now();
        let b = Arc::new(Breaker::new(policy(), now));
        assert_eq!(run(&b, true, now), None, "below the volume threshold");
        assert_eq!(run(&b, true, now), None);
        assert_eq!(run(&b, false, now), None);
        // 3 of 4 failed: 75% > 50%, volume 4 reached.
        assert_eq!(run(&b, true, now), Some(BreakerState::Open));
        assert!(b.admit(now).is_none(), "open fails fast");
        assert_eq!(b.state(now), BreakerState::Open);

        let later = now + Duration::from_secs(30);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        let probe = b.admit(later).expect("one probe");
        assert!(b.admit(later).is_none(), "only one probe");
        assert_eq!(b.record(probe, true, later), Some(BreakerState::Open));

        let later = later + Duration::from_secs(30);
        let probe = b.admit(later).expect("probe");
        assert_eq!(b.record(probe, false, later), Some(BreakerState::Closed));
        assert_eq!(b.state(later), BreakerState::Closed);
        assert_eq!(run(&b, true, later), None, "stats were reset on closing");
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_the_threshold_does_not_open() {
        let now = Instant::now();
        let b = Arc::new(Breaker::new(policy(), now));
        for failed in [true, false, true, false] {
            assert_eq!(run(&b, failed, now), None, "50% is not more than 50%");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn old_buckets_roll_out_of_the_window() {
        let now = Instant::now();
        let b = Arc::new(Breaker::new(policy(), now));
        for _ in 0..3 {
            run(&b, true, now);
        }
        // Ten seconds later those failures no longer count.
        let later = now + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(run(&b, false, later), None);
        }
        assert_eq!(run(&b, true, later), None, "1 of 4 in the window");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_another_through() {
        let now = Instant::now();
        let b = Arc::new(Breaker::new(policy(), now));
        for _ in 0..4 {
            run(&b, true, now);
        }
        let later = now + Duration::from_secs(30);
        drop(b.admit(later).expect("probe"));
        assert!(b.admit(later).is_some());
    }
}
