//! THE stack of a destination: every layer a request passes, in request
//! order (tower's `ServiceBuilder`: the first layer added sees the request
//! first), with why it is there.

use std::sync::Arc;

use http::{Request, Response};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use super::balance::Balance;
use super::policy::attempt::AttemptTimeoutLayer;
use super::policy::breaker::{Breaker, BreakerLayer};
use super::policy::budget::RetryBudget;
use super::policy::deadline::DeadlineLayer;
use super::policy::limit::{LimitLayer, Limits};
use super::policy::retry::RetryLayer;
use super::policy::trace::TraceAttemptLayer;
use crate::http::{Body, ProxyError};
use crate::metrics::ResilienceMetrics;

/// A destination's stack, boxed at the module boundary.
pub type Stack = BoxCloneSyncService<Request<Body>, Response<Body>, ProxyError>;

/// The parts a stack is built from.
pub struct Parts {
    /// The destination's name.
    pub service: String,
    /// Its error-rate breaker, if it has one.
    pub breaker: Option<Arc<Breaker>>,
    /// Its concurrency limits.
    pub limits: Arc<Limits>,
    /// Its retry budget.
    pub budget: Arc<RetryBudget>,
    /// Where to count, for this destination.
    pub metrics: ResilienceMetrics,
    /// The innermost service.
    pub balance: Balance,
}

/// Composes the stack.
pub fn build(parts: Parts) -> Stack {
    let Parts {
        service,
        breaker,
        limits,
        budget,
        metrics,
        balance,
    } = parts;
    let stack = ServiceBuilder::new()
        // The whole request, retries included, within `timeout` (or a
        // shorter grpc-timeout from the client).
        .layer(DeadlineLayer::new(&service, metrics.clone()))
        // While the destination fails, fail fast or answer with the
        // fallback, before spending anything on it.
        .layer(BreakerLayer::new(breaker, &service, metrics.clone()))
        // Cap requests in flight (a retried request counts once).
        .layer(LimitLayer::new(limits, metrics.clone()))
        // Send failed attempts again when safe, within the budget.
        .layer(RetryLayer::new(budget, metrics.clone()))
        // A span per attempt, its context in the attempt's headers.
        .layer(TraceAttemptLayer)
        // Bound each attempt, so a hanging endpoint costs one attempt.
        .layer(AttemptTimeoutLayer::new(metrics))
        // Pick an endpoint, send, learn from the outcome.
        .service(balance);
    BoxCloneSyncService::new(stack)
}
