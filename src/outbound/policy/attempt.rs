//! The per-try timeout: one attempt may take at most the route's
//! `per_try_timeout` (and never past the request's deadline), so that a
//! hanging endpoint costs one attempt, not the whole request.

use std::task::{Context, Poll};
use std::time::Duration;

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

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        let ctx = RequestContext::of(&req).cloned();
        let per_try: Option<Duration> = ctx.as_ref().and_then(|c| c.route.per_try_timeout);
        let call = self.inner.clone().call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let (Some(per_try), Some(ctx)) = (per_try, ctx) else {
                return call.await;
            };
            // The deadline layer answers for the time past the deadline.
            let bound = ctx.deadline.map_or(per_try, |d| {
                per_try.min(d.saturating_duration_since(Instant::now()))
            });
            match tokio::time::timeout(bound, call).await {
                Ok(result) => result,
                Err(_) if bound < per_try => std::future::pending().await,
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
