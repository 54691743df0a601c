//! Concurrency limits of a destination (what Envoy calls circuit
//! breakers): over `max_requests` in flight, or `max_pending` waiting for a
//! connection, a request fails fast with 503 instead of queueing behind a
//! destination that cannot keep up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::ResponseFuture;
use crate::http::{Body, ProxyError};
use crate::metrics::ResilienceMetrics;

/// The counters and caps of one destination.
#[derive(Debug)]
pub struct Limits {
    /// Cap on requests in flight.
    pub max_requests: usize,
    /// Cap on requests waiting for a connection.
    pub max_pending: usize,
    in_flight: AtomicUsize,
    pending: AtomicUsize,
}

impl Limits {
    /// Caps, nothing counted yet.
    pub fn new(max_requests: usize, max_pending: usize) -> Self {
        Self {
            max_requests,
            max_pending,
            in_flight: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight, or refuses it over the cap.
    pub fn enter(self: &Arc<Self>) -> Option<Slot> {
        acquire(&self.in_flight, self.max_requests).then(|| Slot {
            limits: self.clone(),
            pending: false,
        })
    }

    /// Counts a request waiting for a connection, or refuses it.
    pub fn wait_for_connection(self: &Arc<Self>) -> Option<Slot> {
        acquire(&self.pending, self.max_pending).then(|| Slot {
            limits: self.clone(),
            pending: true,
        })
    }
}

fn acquire(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// A counted request; uncounted when dropped.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<Limits>,
    pending: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let counter = if self.pending {
            &self.limits.pending
        } else {
            &self.limits.in_flight
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Caps requests in flight.
#[derive(Debug, Clone)]
pub struct LimitLayer {
    limits: Arc<Limits>,
    metrics: ResilienceMetrics,
}

impl LimitLayer {
    /// A layer over `limits`.
    pub fn new(limits: Arc<Limits>, metrics: ResilienceMetrics) -> Self {
        Self { limits, metrics }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;
    fn layer(&self, inner: S) -> Limit<S> {
        Limit {
            inner,
            limits: self.limits.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`LimitLayer`].
#[derive(Debug, Clone)]
pub struct Limit<S> {
    inner: S,
    limits: Arc<Limits>,
    metrics: ResilienceMetrics,
}

impl<S> Service<Request<Body>> for Limit<S>
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
        let Some(slot) = self.limits.enter() else {
            self.metrics.limited("max-requests");
            return Box::pin(async {
                Err(ProxyError::Overloaded {
                    limit: "max-requests",
                })
            });
        };
        let call = self.inner.clone().call(req);
        Box::pin(async move {
            let result = call.await;
            drop(slot);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_capped() {
        let limits = Arc::new(Limits::new(2, 1));
        let a = limits.enter().unwrap();
        let _b = limits.enter().unwrap();
        assert!(limits.enter().is_none());
        drop(a);
        assert!(limits.enter().is_some());
        let _p = limits.wait_for_connection().unwrap();
        assert!(limits.wait_for_connection().is_none());
    }
}
