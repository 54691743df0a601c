//! The innermost service of a destination: pick an endpoint (skipping
//! ejected ones, and the one the previous attempt failed on), send, and
//! learn from the outcome (latency for the balancer, failures for outlier
//! ejection).
//!
//! Picking is a pure function of the endpoints, their state and a random
//! draw: round robin, least request (the less busy of two random
//! endpoints) or peak EWMA (the cheaper of two by latency times load).
//!
//! Every attempt's end reaches the endpoint, whatever ends it: a response,
//! an error, the per-try timeout or the request's deadline (which drop the
//! attempt's future: a timeout), or the client leaving (which tells
//! nothing about the endpoint). A hung endpoint is thus measured as slow
//! and ejected like one that fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::Service;
use tracing::{info, warn};

use super::discovery::EndpointSet;
use super::endpoint::Endpoint;
use super::load::Typical;
use super::outlier::{Admit, OutlierPolicy};
use super::policy::limit::Limits;
use super::policy::{RequestContext, ResponseFuture};
use crate::config::LoadBalancer;
use crate::http::outcome::{Failure, Outcome};
use crate::http::{Body, ProxyError};
use crate::metrics::ResilienceMetrics;

/// The chosen endpoint.
#[derive(Debug)]
pub struct Picked {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    /// Whether this request is its probe after an ejection.
    pub probe: bool,
}

/// Picks an endpoint for one request, or `None` if there are none.
/// `avoid` (the endpoint the previous attempt failed on) is skipped when
/// another will do. If every endpoint is ejected, any is better than none.
pub fn pick(
    kind: LoadBalancer,
    endpoints: &[Arc<Endpoint>],
    avoid: Option<SocketAddr>,
    now: Instant,
    turn: &AtomicUsize,
    typical: &Typical,
) -> Option<Picked> {
    // An endpoint whose ejection is over gets its one probe first.
    for endpoint in endpoints {
        if Some(endpoint.addr()) != avoid && endpoint.health().admit(now) == Admit::Probe {
            endpoint.health().probe_sent();
            return Some(Picked {
                endpoint: endpoint.clone(),
                probe: true,
            });
        }
    }
    let healthy: Vec<&Arc<Endpoint>> = endpoints
        .iter()
        .filter(|e| e.health().admit(now) == Admit::Yes)
        .collect();
    let others: Vec<&Arc<Endpoint>> = healthy
        .iter()
        .copied()
        .filter(|e| Some(e.addr()) != avoid)
        .collect();
    let candidates = match (others.is_empty(), healthy.is_empty()) {
        (false, _) => others,
        (true, false) => healthy,
        (true, true) => endpoints.iter().collect(),
    };
    choose(kind, &candidates, now, turn, typical).map(|endpoint| Picked {
        endpoint: endpoint.clone(),
        probe: false,
    })
}

/// Costs closer than this factor are a tie, taken at random: latencies of
/// equal endpoints differ by noise, and always preferring the one that was
/// a little faster last time starves the rest.
const TIE: f64 = 1.25;

fn choose<'a>(
    kind: LoadBalancer,
    candidates: &[&'a Arc<Endpoint>],
    now: Instant,
    turn: &AtomicUsize,
    typical: &Typical,
) -> Option<&'a Arc<Endpoint>> {
    match candidates.len() {
        0 => return None,
        1 => return Some(candidates[0]),
        _ => {}
    }
    if kind == LoadBalancer::RoundRobin {
        let i = turn.fetch_add(1, Ordering::Relaxed) % candidates.len();
        return Some(candidates[i]);
    }
    // Power of two choices: two distinct random candidates; `a`, being
    // random, wins ties.
    let a = fastrand::usize(..candidates.len());
    let b = (a + 1 + fastrand::usize(..candidates.len() - 1)) % candidates.len();
    let (ea, eb) = (candidates[a], candidates[b]);
    let a_will_do = match kind {
        LoadBalancer::LeastRequest => ea.load.in_flight() <= eb.load.in_flight(),
        _ => ea.load.cost(now, typical) <= eb.load.cost(now, typical) * TIE,
    };
    Some(if a_will_do { ea } else { eb })
}

/// What the balancer of one destination works with.
#[derive(Debug)]
pub struct BalanceSettings {
    /// The destination's name (logs, metrics).
    pub service: String,
    /// Its endpoints.
    pub endpoints: Arc<EndpointSet>,
    /// How to pick.
    pub kind: LoadBalancer,
    /// Ejection settings.
    pub outlier: OutlierPolicy,
    /// Its concurrency limits (for `max_pending`).
    pub limits: Arc<Limits>,
    /// Where to count.
    pub metrics: ResilienceMetrics,
    /// The typical latency of its endpoints, which unmeasured estimates
    /// fade toward.
    pub typical: Arc<Typical>,
}

/// Picks, sends and learns.
#[derive(Debug, Clone)]
pub struct Balance {
    settings: Arc<BalanceSettings>,
    turn: Arc<AtomicUsize>,
}

impl Balance {
    /// A balancer over `settings.endpoints`.
    pub fn new(settings: Arc<BalanceSettings>) -> Self {
        Self {
            settings,
            turn: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Service<Request<Body>> for Balance {
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        Box::pin(send(self.settings.clone(), self.turn.clone(), req))
    }
}

async fn send(
    settings: Arc<BalanceSettings>,
    turn: Arc<AtomicUsize>,
    req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    let ctx = RequestContext::of(&req).cloned();
    let mut endpoints = settings.endpoints.endpoints();
    if endpoints.is_empty() {
        settings.endpoints.first_answer().await;
        endpoints = settings.endpoints.endpoints();
    }
    let avoid = ctx.as_ref().and_then(RequestContext::last_tried);
    let now = Instant::now();
    let picked = pick(
        settings.kind,
        &endpoints,
        avoid,
        now,
        &turn,
        &settings.typical,
    )
    .ok_or_else(|| ProxyError::NoEndpoints {
        service: settings.service.clone(),
    })?;
    if let Some(ctx) = &ctx {
        ctx.tried
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(picked.endpoint.addr());
    }
    let deadline = ctx.as_ref().and_then(RequestContext::attempt_deadline);
    let attempt = Attempt::start(settings.clone(), picked, endpoints, deadline);
    let endpoint = attempt.endpoint.clone();
    let pending = match endpoint.would_wait() {
        true => match settings.limits.wait_for_connection() {
            Some(slot) => Some(slot),
            None => {
                settings.metrics.limited("max-pending");
                attempt.end(Outcome::Local);
                return Err(ProxyError::Overloaded {
                    limit: "max-pending",
                });
            }
        },
        false => None,
    };
    let app_spoke_http1 = ctx.as_ref().is_none_or(|c| c.app_spoke_http1);
    let result = endpoint.send(req, app_spoke_http1).await;
    drop(pending);
    attempt.end(Outcome::of(&result));
    result
}

/// One attempt at an endpoint, from the pick to its end. However it ends,
/// the endpoint learns: ended with an outcome, or dropped, which is a
/// timeout when the attempt's deadline has passed (the per-try timeout or
/// the request's deadline fired) and the client leaving otherwise.
struct Attempt {
    settings: Arc<BalanceSettings>,
    endpoint: Arc<Endpoint>,
    /// The endpoints as they were at the pick (for the ejection cap).
    endpoints: Arc<Vec<Arc<Endpoint>>>,
    /// Whether it is the endpoint's probe after an ejection.
    probe: bool,
    started: Instant,
    deadline: Option<Instant>,
    ended: bool,
}

impl Attempt {
    fn start(
        settings: Arc<BalanceSettings>,
        picked: Picked,
        endpoints: Arc<Vec<Arc<Endpoint>>>,
        deadline: Option<Instant>,
    ) -> Self {
        picked.endpoint.load.begin();
        Self {
            settings,
            endpoint: picked.endpoint,
            endpoints,
            probe: picked.probe,
            started: Instant::now(),
            deadline,
            ended: false,
        }
    }

    fn end(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        self.ended = true;
        let settings = &self.settings;
        let load = &self.endpoint.load;
        if matches!(outcome, Outcome::Local | Outcome::Cancelled) {
            load.end(None, &settings.typical);
            if self.probe {
                self.endpoint.health().probe_abandoned();
            }
            return;
        }
        // A failure weighs at least as much as a response many times
        // slower than typical, so a fast failing endpoint does not look
        // like the fastest (it fades within about a second; ejection
        // deals with lasting failure).
        let elapsed = self.started.elapsed();
        let sample = match (outcome.is_failure(), settings.typical.nanos()) {
            (true, Some(typical)) => {
                elapsed.max(Duration::from_nanos((typical * FAILURE_WEIGHT) as u64))
            }
            _ => elapsed,
        };
        load.end(Some(sample), &settings.typical);
        learn(settings, &self.endpoint, &self.endpoints, outcome);
    }
}

/// How many times the typical latency a failed attempt counts as.
const FAILURE_WEIGHT: f64 = 10.0;

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let expired = self.deadline.is_some_and(|d| Instant::now() >= d);
        self.record(if expired {
            Outcome::Failed(Failure::Timeout)
        } else {
            Outcome::Cancelled
        });
    }
}

/// Feeds an outcome to the endpoint's outlier state.
pub(super) fn learn(
    settings: &BalanceSettings,
    endpoint: &Endpoint,
    all: &[Arc<Endpoint>],
    outcome: Outcome,
) {
    let now = Instant::now();
    let ejected = all.iter().filter(|e| e.health().is_ejected()).count();
    let may_eject = ejected < settings.outlier.max_ejected(all.len());
    let mut health = endpoint.health();
    let was_ejected = health.is_ejected();
    let ejection = health.record(outcome.is_failure(), now, &settings.outlier, may_eject);
    drop(health);
    if let Some(until) = ejection {
        settings.metrics.ejected();
        warn!(
            service = settings.service,
            endpoint = %endpoint.addr(),
            for_ms = until.saturating_duration_since(now).as_millis() as u64,
            last = outcome.as_str(),
            "endpoint ejected after failures in a row"
        );
    } else if was_ejected && !outcome.is_failure() {
        info!(service = settings.service, endpoint = %endpoint.addr(), "endpoint restored after a successful probe");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamProtocol;
    use crate::http::h1_pool::PoolSettings;
    use crate::http::plain_client::PlainClient;
    use crate::http::server::HeaderLimits;
    use crate::outbound::endpoint::Conn;

    fn endpoints(n: u16) -> Vec<Arc<Endpoint>> {
        let settings = PoolSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_connections: 1,
            limits: HeaderLimits {
                max_bytes: 1024,
                max_count: 10,
            },
        };
        (1..=n)
            .map(|port| {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let conn = Conn::Plain {
                    client: PlainClient::new(addr, settings),
                    protocol: UpstreamProtocol::Auto,
                };
                Arc::new(Endpoint::new(addr, conn))
            })
            .collect()
    }

    /// Sends `n` requests one after another, `gap` apart, each answered in
    /// `latency(endpoint index)`; returns each endpoint's share in percent.
    async fn spread(
        kind: LoadBalancer,
        all: &[Arc<Endpoint>],
        typical: &Typical,
        n: usize,
        gap: Duration,
        latency: impl Fn(usize) -> Duration,
    ) -> Vec<usize> {
        let turn = AtomicUsize::new(0);
        let mut picks = vec![0; all.len()];
        for _ in 0..n {
            let picked = pick(kind, all, None, Instant::now(), &turn, typical).expect("one");
            let i = all.iter().position(|e| e.addr() == picked.endpoint.addr());
            let i = i.expect("known");
            picks[i] += 1;
            picked.endpoint.load.begin();
            let took = latency(i);
            tokio::time::advance(took).await;
            picked.endpoint.load.end(Some(took), typical);
            tokio::time::advance(gap).await;
        }
        picks.iter().map(|p| p * 100 / n).collect()
    }

    /// About 1 ms, give or take 30%, as loopback latencies go.
    fn jitter() -> Duration {
        Duration::from_micros(700 + fastrand::u64(..600))
    }

    #[tokio::test(start_paused = true)]
    async fn equal_endpoints_share_from_the_first_request() {
        let all = endpoints(3);
        let typical = Typical::default();
        let shares = spread(
            LoadBalancer::PeakEwma,
            &all,
            &typical,
            150,
            Duration::from_millis(40),
            |_| jitter(),
        )
        .await;
        assert!(shares.iter().all(|s| *s >= 22), "{shares:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn one_slow_response_costs_an_endpoint_about_a_second_not_its_share() {
        let all = endpoints(3);
        let typical = Typical::default();
        // Warm: all three measured.
        spread(
            LoadBalancer::PeakEwma,
            &all,
            &typical,
            30,
            Duration::from_millis(40),
            |_| jitter(),
        )
        .await;
        // The first endpoint answers once in 200 ms (200 times typical).
        all[0].load.begin();
        all[0].load.end(Some(Duration::from_millis(200)), &typical);
        let now = Instant::now();
        let turn = AtomicUsize::new(0);
        let right_after = (0..30)
            .filter(|_| {
                let picked = pick(LoadBalancer::PeakEwma, &all, None, now, &turn, &typical);
                picked.expect("one").endpoint.addr() == all[0].addr()
            })
            .count();
        assert_eq!(right_after, 0, "just after a slow answer it is avoided");
        // 300 requests over 12 s: it is back within about a second and a
        // half, and gets most of its share.
        let shares = spread(
            LoadBalancer::PeakEwma,
            &all,
            &typical,
            300,
            Duration::from_millis(40),
            |_| jitter(),
        )
        .await;
        assert!(shares[0] >= 20, "{shares:?}");
        assert!(shares.iter().all(|s| *s <= 45), "{shares:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slower_endpoint_still_gets_less_under_light_load() {
        let all = endpoints(3);
        let typical = Typical::default();
        let shares = spread(
            LoadBalancer::PeakEwma,
            &all,
            &typical,
            300,
            Duration::from_millis(40),
            |i| {
                if i == 2 {
                    Duration::from_millis(20)
                } else {
                    jitter()
                }
            },
        )
        .await;
        assert!(shares[2] < 15, "20 times slower, yet {shares:?}");
        assert!(
            shares[2] >= 1,
            "but it is measured again now and then: {shares:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_the_busy_endpoint_is_avoided() {
        let all = endpoints(3);
        let typical = Typical::default();
        spread(
            LoadBalancer::PeakEwma,
            &all,
            &typical,
            30,
            Duration::ZERO,
            |_| jitter(),
        )
        .await;
        // Twenty requests stuck on the first endpoint.
        for _ in 0..20 {
            all[0].load.begin();
        }
        let turn = AtomicUsize::new(0);
        let now = Instant::now();
        let to_busy = (0..100)
            .filter(|_| {
                let picked = pick(LoadBalancer::PeakEwma, &all, None, now, &turn, &typical);
                picked.expect("one").endpoint.addr() == all[0].addr()
            })
            .count();
        assert_eq!(to_busy, 0);
    }
}
