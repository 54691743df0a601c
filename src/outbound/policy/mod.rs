//! The resilience policies of a destination, one tower middleware per
//! file, composed in request order in [`super::stack`]:
//!
//! | layer | file | why |
//! |---|---|---|
//! | deadline | `deadline.rs` | the whole request, retries included, within `timeout` (or a shorter `grpc-timeout`) |
//! | breaker | `breaker.rs` | fail fast (or answer with the fallback) while the destination fails |
//! | limit | `limit.rs` | cap requests in flight; fail fast over the cap |
//! | retry | `retry.rs` | try failed attempts again, within the budget (`budget.rs`), when it is safe |
//! | trace | `trace.rs` | a client span per attempt, its context sent upstream |
//! | attempt timeout | `attempt.rs` | bound each attempt |
//!
//! What a layer needs to know about the request (its route's settings, the
//! deadline, the endpoints already tried) travels in [`RequestContext`], in
//! the request's extensions.

pub mod attempt;
pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod deadline;
pub mod limit;
pub mod retry;
pub mod trace;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use tokio::time::Instant;

use super::destination::Destination;
use crate::config::{FallbackConfig, RetryConfig, RetryOn};
use crate::http::{Body, ProxyError};

/// The future every layer returns.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, ProxyError>> + Send>>;

/// What the layers of a destination know about one request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The settings of the route it matched.
    pub route: Arc<RoutePolicy>,
    /// Whether the app spoke HTTP/1.x.
    pub app_spoke_http1: bool,
    /// When the whole request must be answered (set by the deadline layer).
    pub deadline: Option<Instant>,
    /// When this attempt must be answered (set by the per-try timeout).
    pub attempt_deadline: Option<Instant>,
    /// The endpoints tried so far, in order (the balancer adds to it).
    pub tried: Arc<Mutex<Vec<SocketAddr>>>,
    /// True for a request sent to a fallback destination, which never
    /// falls back further.
    pub is_fallback: bool,
    /// The request's span, parent of each attempt's (shared: the context
    /// is cloned by several layers per attempt).
    pub trace: Option<Arc<trace::AttemptTrace>>,
}

impl RequestContext {
    /// The context of a fresh request on `route`.
    pub fn new(route: Arc<RoutePolicy>, app_spoke_http1: bool) -> Self {
        Self {
            route,
            app_spoke_http1,
            deadline: None,
            attempt_deadline: None,
            tried: Arc::default(),
            is_fallback: false,
            trace: None,
        }
    }

    /// The endpoint of the latest attempt.
    pub fn last_tried(&self) -> Option<SocketAddr> {
        self.tried
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .copied()
    }

    /// When the current attempt is given up: the sooner of its per-try
    /// timeout and the request's deadline.
    pub fn attempt_deadline(&self) -> Option<Instant> {
        match (self.attempt_deadline, self.deadline) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        }
    }

    /// The context of a request's.
    pub fn of<B>(req: &Request<B>) -> Option<&Self> {
        req.extensions().get::<Self>()
    }
}

/// The settings of one route (a destination's, or a route's overrides).
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    /// The route's name in metrics and logs (`default` for requests that
    /// named the destination itself).
    pub label: Arc<str>,
    /// The whole request, all attempts included.
    pub timeout: Duration,
    /// One attempt.
    pub per_try_timeout: Option<Duration>,
    /// When to retry.
    pub retries: Arc<RetryPolicy>,
    /// What to answer while the breaker is open.
    pub fallback: Option<Fallback>,
}

/// When and how to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all.
    pub attempts: u32,
    /// The conditions.
    pub on: Vec<RetryOn>,
    /// Backoff base.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
    /// Retry requests that may have reached the app even if not idempotent.
    pub non_idempotent: bool,
    /// Largest body kept for replay.
    pub max_body: usize,
}

impl Default for RetryPolicy {
    /// The defaults of the config.
    fn default() -> Self {
        Self::from_config(&RetryConfig::default())
    }
}

impl RetryPolicy {
    /// The policy of a config section.
    pub fn from_config(config: &RetryConfig) -> Self {
        Self {
            attempts: *config.attempts,
            on: config.on.iter().map(|on| *on.get()).collect(),
            backoff_base: config.backoff_base.0,
            backoff_max: config.backoff_max.0,
            non_idempotent: config.non_idempotent,
            max_body: config.max_body.as_usize(),
        }
    }
}

/// The answer while a destination's breaker is open.
#[derive(Debug, Clone)]
pub enum Fallback {
    /// A fixed response.
    Static {
        /// Its status.
        status: StatusCode,
        /// Its headers.
        headers: HeaderMap,
        /// Its body.
        body: Bytes,
    },
    /// The answer of another destination.
    Service(Arc<Destination>),
}

impl Fallback {
    /// The fallback of a config section; `find` looks destinations up by
    /// name (config validation made sure they exist).
    pub fn from_config(
        config: &FallbackConfig,
        find: impl Fn(&str) -> Option<Arc<Destination>>,
    ) -> Option<Self> {
        if let Some(service) = &config.service {
            return find(service).map(Self::Service);
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        Some(Self::Static {
            status: config
                .status
                .as_ref()
                .and_then(|s| StatusCode::from_u16(*s.get()).ok())
                .unwrap_or(StatusCode::OK),
            headers,
            body: Bytes::from(config.body.clone().unwrap_or_default()),
        })
    }
}
