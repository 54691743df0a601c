//! A client span per attempt: each attempt (a retry is a new one) gets its
//! own span, a child of the request's, and carries its context upstream,
//! so the far sidecar's server span hangs under the attempt that reached
//! it and a trace shows every retry.

use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};

use http::{Request, Response};
use opentelemetry::trace::{SpanContext, SpanKind};
use tower::{Layer, Service};

use super::{RequestContext, ResponseFuture};
use crate::http::{Body, ProxyError};
use crate::trace::Tracer;

/// The request's span, parent of its attempts' spans.
#[derive(Debug, Clone)]
pub struct AttemptTrace {
    /// The tracer of the config generation the request arrived under.
    pub tracer: Arc<Tracer>,
    /// The request's span.
    pub parent: SpanContext,
}

/// Starts a span per attempt.
#[derive(Debug, Clone, Default)]
pub struct TraceAttemptLayer;

impl<S> Layer<S> for TraceAttemptLayer {
    type Service = TraceAttempt<S>;
    fn layer(&self, inner: S) -> TraceAttempt<S> {
        TraceAttempt { inner }
    }
}

/// See [`TraceAttemptLayer`].
#[derive(Debug, Clone)]
pub struct TraceAttempt<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for TraceAttempt<S>
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
        let Some(ctx) = RequestContext::of(&req) else {
            return Box::pin(self.inner.clone().call(req));
        };
        let Some(trace) = ctx.trace.clone() else {
            return Box::pin(self.inner.clone().call(req));
        };
        let tried = ctx.tried.clone();
        let attempt = tried.lock().unwrap_or_else(PoisonError::into_inner).len() + 1;
        let mut span = trace.tracer.child(
            &trace.parent,
            SpanKind::Client,
            crate::observe::span_name(req.method()),
        );
        trace.tracer.inject(req.headers_mut(), span.context());
        if span.is_recording() {
            span.set("http.request.method", req.method().as_str().to_owned());
            span.set("pilotfish.attempt", attempt as i64);
            if attempt > 1 {
                span.set("http.request.resend_count", (attempt - 1) as i64);
            }
        }
        let call = self.inner.clone().call(req);
        Box::pin(async move {
            let result = call.await;
            if span.is_recording() {
                let endpoint = tried
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .last()
                    .copied();
                if let Some(endpoint) = endpoint {
                    span.set("network.peer.address", endpoint.ip().to_string());
                    span.set("network.peer.port", i64::from(endpoint.port()));
                }
                match &result {
                    Ok(response) => {
                        let status = response.status();
                        span.set("http.response.status_code", i64::from(status.as_u16()));
                        if status.is_client_error() || status.is_server_error() {
                            span.set("error.type", status.as_str().to_owned());
                            span.fail(status.as_str().to_owned());
                        }
                    }
                    Err(err) => {
                        let reason = err.reason().as_str();
                        span.set("error.type", reason);
                        span.set("pilotfish.error", reason);
                        span.fail(reason);
                    }
                }
            }
            result
        })
    }
}
