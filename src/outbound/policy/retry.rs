//! Retries: a failed attempt is sent again when the route's conditions
//! match, when it is safe, and when the destination's budget allows.
//!
//! Safe means: the request provably never reached the app (no connection,
//! a refused stream, the far sidecar could not reach its app), or it is
//! idempotent (RFC 9110: GET, HEAD, OPTIONS, TRACE, PUT, DELETE), or it
//! carries an `Idempotency-Key`, or the route opts in, or it is a gRPC
//! call failing with a gRPC status the route lists (gRPC's own rule). The
//! budget (`budget.rs`) lets retries add at most a share of the requests of
//! the last second, or a few a second when that is more, so a failing
//! destination never gets a retry storm. Backoff is exponential with full jitter, and at least the
//! `Retry-After` of a 429 or 503; a retry never starts when its wait would
//! end after the deadline. The body is kept
//! for replay up to `max_body`; larger bodies are not retried.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::budget::RetryBudget;
use super::{RequestContext, ResponseFuture, RetryPolicy, backoff};
use crate::config::RetryOn;
use crate::http::outcome::{Failure, Outcome};
use crate::http::replay::ReplayBody;
use crate::http::{Body, BoxError, ProxyError, grpc};
use crate::metrics::ResilienceMetrics;

/// Header on retried requests: which attempt this is (2, 3, ...).
pub const ATTEMPT_HEADER: http::HeaderName = http::HeaderName::from_static("pilotfish-attempt");
/// Marks a request as safe to repeat, whatever its method.
const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// Whether a method is idempotent (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The condition that calls for a retry of this outcome, if any.
pub fn condition(on: &[RetryOn], outcome: Outcome) -> Option<RetryOn> {
    on.iter().copied().find(|c| matches(*c, outcome))
}

/// Conditions name failures (here, or the far sidecar's own on the mesh
/// link) and statuses (of any response, the far sidecar's error responses
/// included), as Envoy's `retry_on` does.
fn matches(on: RetryOn, outcome: Outcome) -> bool {
    let failure = outcome.failure();
    let status = outcome.status();
    match on {
        RetryOn::ConnectFailure => failure == Some(Failure::ConnectFailure),
        RetryOn::RefusedStream => failure == Some(Failure::RefusedStream),
        RetryOn::Reset => failure == Some(Failure::Reset),
        RetryOn::PerTryTimeout => failure == Some(Failure::Timeout),
        RetryOn::FiveXx => failure.is_some() || status.is_some_and(|s| s >= 500),
        RetryOn::GatewayError => {
            failure.is_some() || status.is_some_and(|s| (502..=504).contains(&s))
        }
        RetryOn::Status(code) => status == Some(code),
        RetryOn::Grpc(code) => {
            matches!(outcome, Outcome::Response { grpc: Some(g), .. } if g == code.code())
        }
    }
}

/// Whether a retry is allowed to send this request again.
pub fn is_safe(req_idempotent: bool, policy: &RetryPolicy, outcome: Outcome) -> bool {
    outcome.unreached() || req_idempotent || policy.non_idempotent
}

/// Retries failed attempts of one destination.
#[derive(Clone)]
pub struct RetryLayer {
    budget: Arc<RetryBudget>,
    metrics: ResilienceMetrics,
}

impl RetryLayer {
    /// Retries within `budget`, counted in the destination's `metrics`.
    pub fn new(budget: Arc<RetryBudget>, metrics: ResilienceMetrics) -> Self {
        Self { budget, metrics }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`RetryLayer`].
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    layer: RetryLayer,
}

impl<S> Service<Request<Body>> for Retry<S>
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
        self.layer.budget.deposit(Instant::now());
        let Some(ctx) = RequestContext::of(&req).cloned() else {
            return Box::pin(self.inner.clone().call(req));
        };
        if ctx.route.retries.attempts <= 1 {
            return Box::pin(self.inner.clone().call(req));
        }
        Box::pin(retry_loop(self.inner.clone(), self.layer.clone(), ctx, req))
    }
}

async fn retry_loop<S>(
    inner: S,
    layer: RetryLayer,
    ctx: RequestContext,
    req: Request<Body>,
) -> Result<Response<Body>, ProxyError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let policy = ctx.route.retries.clone();
    let idempotent = is_idempotent(req.method()) || req.headers().contains_key(IDEMPOTENCY_KEY);
    // Every gRPC call is a POST; a gRPC status listed in the conditions
    // says the call may be repeated, as in gRPC's own retry policy.
    let grpc_call = grpc::is_grpc(req.headers());
    let (parts, body) = req.into_parts();
    let replay = (!body.is_end_stream()).then(|| ReplayBody::new(body, policy.max_body));
    // A view of the body for each attempt; `None` once it cannot be replayed.
    let next_body = || match &replay {
        None => Some(Body::Empty),
        Some(replay) => replay.replay().map(|view| Body::Boxed(view.boxed_unsync())),
    };
    let mut body = next_body().unwrap_or_default();
    let mut attempt = 1;
    loop {
        let mut req = Request::from_parts(parts.clone(), body);
        if attempt > 1 {
            req.headers_mut()
                .insert(ATTEMPT_HEADER, HeaderValue::from(attempt));
        }
        let (result, outcome) = attempt_outcome(inner.clone().call(req).await, &policy).await;
        let Some(reason) = condition(&policy.on, outcome) else {
            return result;
        };
        let replayable = replay.as_ref().is_none_or(ReplayBody::can_replay);
        let safe = is_safe(idempotent, &policy, outcome)
            || (grpc_call && matches!(reason, RetryOn::Grpc(_)));
        if attempt >= policy.attempts || !replayable || !safe {
            return result;
        }
        let mut wait = backoff::next(policy.backoff_base, policy.backoff_max, attempt);
        if let Ok(response) = &result {
            // The upstream said when to come back: not sooner.
            let asked = backoff::retry_after(
                response.status(),
                response.headers(),
                std::time::SystemTime::now(),
            );
            wait = wait.max(asked.unwrap_or_default());
        }
        let resume = Instant::now().checked_add(wait);
        if ctx.deadline.is_some_and(|d| resume.is_none_or(|r| r >= d)) {
            return result; // the wait would outlast the request
        }
        if !layer.budget.withdraw(Instant::now()) {
            layer.metrics.budget_exhausted();
            return result;
        }
        let Some(again) = next_body() else {
            return result; // grew past max_body meanwhile
        };
        layer.metrics.retry(&reason.to_string());
        // Let go of the failed response (and its stream) while waiting.
        drop(result);
        tokio::time::sleep(wait).await;
        body = again;
        attempt += 1;
    }
}

/// Classifies an attempt; for gRPC responses whose status is in the
/// trailers (the usual case), looks at the first frame when the policy has
/// gRPC conditions, and puts it back in front of the body.
async fn attempt_outcome(
    result: Result<Response<Body>, ProxyError>,
    policy: &RetryPolicy,
) -> (Result<Response<Body>, ProxyError>, Outcome) {
    let outcome = Outcome::of(&result);
    let wants_trailers = policy.on.iter().any(|on| matches!(on, RetryOn::Grpc(_)));
    let Ok(response) = result else {
        return (result, outcome);
    };
    let Outcome::Response { status, grpc: None } = outcome else {
        return (Ok(response), outcome);
    };
    if !wants_trailers || !grpc::is_grpc(response.headers()) {
        return (Ok(response), outcome);
    }
    let (parts, mut body) = response.into_parts();
    let first = body.frame().await;
    let trailer_status = first
        .as_ref()
        .and_then(|f| f.as_ref().ok())
        .and_then(|f| f.trailers_ref())
        .and_then(grpc::status);
    let body = Body::Boxed(
        Prepend {
            first: Some(first),
            rest: body,
        }
        .boxed_unsync(),
    );
    let outcome = Outcome::Response {
        status,
        grpc: trailer_status,
    };
    (Ok(Response::from_parts(parts, body)), outcome)
}

/// A body with one frame already read, put back in front.
struct Prepend {
    first: Option<Option<Result<Frame<Bytes>, BoxError>>>,
    rest: Body,
}

impl http_body::Body for Prepend {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(first);
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GrpcCode;

    fn response(status: u16, grpc: Option<u32>) -> Outcome {
        Outcome::Response { status, grpc }
    }

    #[test]
    fn conditions() {
        use Outcome::{Cancelled, Failed, Local};
        let (connect, refused, reset, timeout) = (
            Failed(Failure::ConnectFailure),
            Failed(Failure::RefusedStream),
            Failed(Failure::Reset),
            Failed(Failure::Timeout),
        );
        let peer = |failure, status| Outcome::PeerFailed { failure, status };
        let cases: &[(RetryOn, Outcome, bool)] = &[
            (RetryOn::ConnectFailure, connect, true),
            (RetryOn::ConnectFailure, response(503, None), false),
            (RetryOn::ConnectFailure, reset, false),
            (RetryOn::RefusedStream, refused, true),
            (RetryOn::Reset, reset, true),
            (RetryOn::PerTryTimeout, timeout, true),
            (RetryOn::FiveXx, response(500, None), true),
            (RetryOn::FiveXx, response(404, None), false),
            (RetryOn::FiveXx, timeout, true),
            (RetryOn::GatewayError, response(503, None), true),
            (RetryOn::GatewayError, response(500, None), false),
            (RetryOn::Status(429), response(429, None), true),
            (RetryOn::Status(429), response(503, None), false),
            (
                RetryOn::Grpc(GrpcCode::Unavailable),
                response(200, Some(14)),
                true,
            ),
            (
                RetryOn::Grpc(GrpcCode::Unavailable),
                response(200, Some(0)),
                false,
            ),
            (RetryOn::FiveXx, Local, false),
            (RetryOn::FiveXx, Cancelled, false),
            (RetryOn::Reset, timeout, false),
            (RetryOn::GatewayError, reset, true),
            // The far sidecar's account of its app.
            (RetryOn::Reset, peer(Failure::Reset, 502), true),
            (
                RetryOn::ConnectFailure,
                peer(Failure::ConnectFailure, 503),
                true,
            ),
            (
                RetryOn::Status(503),
                peer(Failure::ConnectFailure, 503),
                true,
            ),
            (RetryOn::Reset, peer(Failure::ConnectFailure, 503), false),
            (RetryOn::PerTryTimeout, peer(Failure::Timeout, 504), true),
        ];
        for (on, outcome, want) in cases {
            assert_eq!(matches(*on, *outcome), *want, "{on} on {outcome:?}");
        }
    }

    #[test]
    fn safety() {
        let policy = RetryPolicy {
            attempts: 3,
            on: vec![RetryOn::FiveXx],
            backoff_base: std::time::Duration::from_millis(25),
            backoff_max: std::time::Duration::from_millis(250),
            non_idempotent: false,
            max_body: 1024,
        };
        let reached = response(503, None);
        assert!(is_safe(true, &policy, reached), "idempotent");
        assert!(
            !is_safe(false, &policy, reached),
            "POST that reached the app"
        );
        assert!(
            is_safe(false, &policy, Outcome::Failed(Failure::ConnectFailure)),
            "never reached"
        );
        assert!(is_safe(
            false,
            &policy,
            Outcome::Failed(Failure::RefusedStream)
        ));
        let far_app_down = Outcome::PeerFailed {
            failure: Failure::ConnectFailure,
            status: 503,
        };
        assert!(
            is_safe(false, &policy, far_app_down),
            "far app unreachable, as the far sidecar reported"
        );
        let far_app_reset = Outcome::PeerFailed {
            failure: Failure::Reset,
            status: 502,
        };
        assert!(!is_safe(false, &policy, far_app_reset), "it may have acted");
        let opted_in = RetryPolicy {
            non_idempotent: true,
            ..policy
        };
        assert!(is_safe(false, &opted_in, reached));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
