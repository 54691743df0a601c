//! The deadline of a whole request: all its attempts and backoffs must
//! produce response headers within the route's `timeout`, or within the
//! client's own `grpc-timeout` when that is shorter.

use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{RequestContext, ResponseFuture};
use crate::http::{Body, ProxyError, grpc};
use crate::metrics::ResilienceMetrics;

/// Puts the deadline on requests.
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    service: String,
    metrics: ResilienceMetrics,
}

impl DeadlineLayer {
    /// For the destination `service` (named in the timeout error).
    pub fn new(service: &str, metrics: ResilienceMetrics) -> Self {
        Self {
            service: service.to_owned(),
            metrics,
        }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    layer: DeadlineLayer,
}

impl<S> Service<Request<Body>> for Deadline<S>
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
        let mut timeout = grpc::timeout(req.headers());
        let mut deadline = None;
        if let Some(ctx) = req.extensions_mut().get_mut::<RequestContext>() {
            let route = ctx.route.timeout;
            timeout = Some(timeout.map_or(route, |grpc| grpc.min(route)));
            deadline = timeout.map(|t| Instant::now() + t);
            ctx.deadline = deadline;
        }
        let call = self.inner.clone().call(req);
        let layer = self.layer.clone();
        Box::pin(async move {
            let (Some(after), Some(deadline)) = (timeout, deadline) else {
                return call.await;
            };
            // The very instant in the context, so the balancer can tell
            // this timeout from the client leaving.
            match tokio::time::timeout_at(deadline, call).await {
                Ok(result) => result,
                Err(_) => {
                    layer.metrics.timed_out("request");
                    Err(ProxyError::ResponseTimeout {
                        service: layer.service,
                        after,
                    })
                }
            }
        })
    }
}
