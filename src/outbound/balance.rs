//! The innermost service of a destination: pick an endpoint (skipping
//! ejected ones, and the one the previous attempt failed on), send, and
//! learn from the outcome (latency for the balancer, failures for outlier
//! ejection).
//!
//! Picking is a pure function of the endpoints, their state and a random
//! draw: round robin, least request (the less busy of two random
//! endpoints) or peak EWMA (the cheaper of two by latency times load).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::Service;
use tracing::{info, warn};

use super::discovery::EndpointSet;
use super::endpoint::Endpoint;
use super::outcome::Outcome;
use super::outlier::{Admit, OutlierPolicy};
use super::policy::limit::Limits;
use super::policy::{RequestContext, ResponseFuture};
use crate::config::LoadBalancer;
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
    choose(kind, &candidates, now, turn).map(|endpoint| Picked {
        endpoint: endpoint.clone(),
        probe: false,
    })
}

fn choose<'a>(
    kind: LoadBalancer,
    candidates: &[&'a Arc<Endpoint>],
    now: Instant,
    turn: &AtomicUsize,
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
    // Power of two choices: two distinct random candidates.
    let a = fastrand::usize(..candidates.len());
    let b = (a + 1 + fastrand::usize(..candidates.len() - 1)) % candidates.len();
    let (ea, eb) = (candidates[a], candidates[b]);
    let a_is_better = match kind {
        LoadBalancer::LeastRequest => ea.load.in_flight() <= eb.load.in_flight(),
        _ => ea.load.cost(now) <= eb.load.cost(now),
    };
    Some(if a_is_better { ea } else { eb })
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
}

/// Picks, sends and learns.
#[derive(Debug, Clone)]
pub struct Balance {
    settings: Arc<BalanceSettings>,
    turn: Arc<AtomicUsize>,
}

impl Balance {
    /// A balancer over `settings.endpoints`.
    pub fn new(settings: BalanceSettings) -> Self {
        Self {
            settings: Arc::new(settings),
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
    let picked =
        pick(settings.kind, &endpoints, avoid, Instant::now(), &turn).ok_or_else(|| {
            ProxyError::NoEndpoints {
                service: settings.service.clone(),
            }
        })?;
    let endpoint = picked.endpoint.clone();
    let mut probe = ProbeGuard(picked.probe.then(|| endpoint.clone()));
    if let Some(ctx) = &ctx {
        ctx.tried
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(endpoint.addr());
    }
    let pending = match endpoint.would_wait() {
        true => Some(settings.limits.wait_for_connection().ok_or_else(|| {
            settings.metrics.limited("max-pending");
            ProxyError::Overloaded {
                limit: "max-pending",
            }
        })?),
        false => None,
    };
    let app_spoke_http1 = ctx.as_ref().is_none_or(|c| c.app_spoke_http1);
    let started = endpoint.load.start();
    let sent_at = Instant::now();
    let result = endpoint.send(req, app_spoke_http1).await;
    drop(pending);
    started.finish(sent_at.elapsed());
    probe.0 = None;
    learn(&settings, &endpoint, &endpoints, Outcome::of(&result));
    result
}

/// Feeds an outcome to the endpoint's outlier state.
fn learn(settings: &BalanceSettings, endpoint: &Endpoint, all: &[Arc<Endpoint>], outcome: Outcome) {
    if outcome == Outcome::Local {
        return;
    }
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
            "endpoint ejected after failures in a row"
        );
    } else if was_ejected && !outcome.is_failure() {
        info!(service = settings.service, endpoint = %endpoint.addr(), "endpoint restored after a successful probe");
    }
}

/// Frees the probe slot if the request is dropped before its outcome.
struct ProbeGuard(Option<Arc<Endpoint>>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some(endpoint) = self.0.take() {
            endpoint.health().probe_abandoned();
        }
    }
}
