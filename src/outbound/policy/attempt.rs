//! The per-try timeout: one attempt may take at most the route's
//! `per_try_timeout` (and never past the request's deadline), so that a
//! hanging endpoint costs one attempt, not the whole request.

use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{RequestContext, ResponseFuture};
use crate::http::{Body, ProxyError};
use crate::metrics::ResilienceMetrics;

/// Bounds each attempt.
#[derive(Debug, Clone)]
pub struct AttemptTimeoutLayer {
    metrics: ResilienceMetrics,
}

impl AttemptTimeoutLayer {
    /// Counting timeouts in `metrics`.
    pub fn new(metrics: ResilienceMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;
    fn layer(&self, inner: S) -> AttemptTimeout<S> {
        AttemptTimeout {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`AttemptTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    metrics: ResilienceMetrics,
}

impl<S> Service<Request<Body>> for AttemptTimeout<S>
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

    fn call(&mut self, mut req: Request<Body>) -> ResponseFuture {
        let Some(ctx) = req.extensions_mut().get_mut::<RequestContext>() else {
            return Box::pin(self.inner.clone().call(req));
        };
        let Some(per_try) = ctx.route.per_try_timeout else {
            return Box::pin(self.inner.clone().call(req));
        };
        // The balancer reads it to tell a timeout from a client leaving.
        let until = Instant::now() + per_try;
        ctx.attempt_deadline = Some(until);
        let ctx = ctx.clone();
        let call = self.inner.clone().call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            if ctx.deadline.is_some_and(|d| d <= until) {
                // The request's deadline comes first; its layer answers.
                return call.await;
            }
            match tokio::time::timeout_at(until, call).await {
                Ok(result) => result,
                Err(_) => {
                    metrics.timed_out("attempt");
                    Err(ProxyError::AttemptTimeout {
                        addr: ctx.last_tried().unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
                        after: per_try,
                    })
                }
            }
        })
    }
}
