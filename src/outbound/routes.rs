//! Routes compiled for sending: where a matched route sends a request (one
//! destination, weighted backends, or no upstream at all: a redirect, a
//! fixed answer) and what it changes on the way. The gateway compiles its
//! routes with the same code against the same destinations.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};

use super::destination::Destination;
use super::policy::{Fallback, RetryPolicy, RoutePolicy};
use crate::config::{
    DestinationConfig, DirectResponse, Located, Redirect, RouteConfig, UrlRewrite,
};
use crate::http::Body;
use crate::routing::filters::HeaderOps;
use crate::routing::split::Split;

/// A route, ready to send with.
#[derive(Debug)]
pub struct Route {
    /// Its name in metrics, logs and spans (`default` for a destination
    /// matched by its name).
    pub label: Arc<str>,
    /// Where requests go.
    pub action: Action,
    /// Changes to the request's fields.
    pub request_headers: Option<HeaderOps>,
    /// Changes to the response's fields.
    pub response_headers: Option<HeaderOps>,
    /// The path and host the upstream gets.
    pub rewrite: Option<UrlRewrite>,
    /// Largest request body.
    pub max_body: Option<u64>,
}

/// What a route does with a request.
#[derive(Debug)]
pub enum Action {
    /// Sends it to one of the backends (one, without a split).
    Forward {
        /// Destinations with the route's settings for each.
        backends: Vec<Backend>,
        /// How one is picked, with more than one.
        split: Option<Split>,
    },
    /// Answers with a redirect.
    Redirect(Redirect),
    /// Answers with a fixed response.
    Respond(DirectResponse),
}

/// One destination of a route.
#[derive(Debug)]
pub struct Backend {
    /// Index of the destination.
    pub destination: usize,
    /// The route's settings for it: the destination's, with the route's
    /// overrides.
    pub policy: Arc<RoutePolicy>,
}

impl Route {
    /// The route of a destination matched by its name: the destination's
    /// own settings, nothing changed.
    pub fn by_name(destination: usize, dst: &DestinationConfig, find: &Finder<'_>) -> Self {
        Self {
            label: Arc::from("default"),
            action: Action::Forward {
                backends: vec![Backend {
                    destination,
                    policy: Arc::new(default_policy(dst, find)),
                }],
                split: None,
            },
            request_headers: None,
            response_headers: None,
            rewrite: None,
            max_body: None,
        }
    }

    /// Compiles a route of the config (validated) against the services
    /// (`outbound.services`, in name order, as the destinations are).
    pub fn compile(
        route: &RouteConfig,
        services: &BTreeMap<String, Located<DestinationConfig>>,
        find: &Finder<'_>,
    ) -> Self {
        let label: Arc<str> = Arc::from(route.label());
        let backend = |service: &str| {
            let destination = services.keys().position(|name| name == service)?;
            let dst = services.get(service)?;
            Some(Backend {
                destination,
                policy: Arc::new(route_policy(route, &label, dst, find)),
            })
        };
        let action = if let Some(redirect) = &route.request_redirect {
            Action::Redirect(redirect.get().clone())
        } else if let Some(direct) = &route.direct_response {
            Action::Respond(direct.get().clone())
        } else if let Some(service) = &route.service {
            Action::Forward {
                backends: backend(service).into_iter().collect(),
                split: None,
            }
        } else {
            let mut backends = Vec::new();
            let mut weights = Vec::new();
            for b in &route.backends {
                let b = b.get();
                if let Some(found) = backend(&b.service) {
                    backends.push(found);
                    weights.push((b.service.as_str(), *b.weight.get()));
                }
            }
            let sticky = route.sticky.as_ref().map(|s| s.get());
            Action::Forward {
                split: (backends.len() > 1).then(|| Split::new(&weights, sticky)),
                backends,
            }
        };
        let ops = |m: &Option<crate::config::HeaderModifier>| {
            // Validated: the names and values parse.
            m.as_ref().and_then(|m| HeaderOps::compile(m).ok())
        };
        Self {
            label,
            action,
            request_headers: ops(&route.request_header_modifier),
            response_headers: ops(&route.response_header_modifier),
            rewrite: route.url_rewrite.as_ref().map(|r| r.get().clone()),
            max_body: route.max_request_body.as_ref().map(|b| b.get().0),
        }
    }
}

/// Looks a destination up by name, for fallbacks.
pub type Finder<'a> = dyn Fn(&str) -> Option<Arc<Destination>> + 'a;

/// A fixed answer.
pub fn direct_response(direct: &DirectResponse) -> Response<Body> {
    let mut response = Response::new(Body::full(direct.body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(direct.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !direct.body.is_empty() {
        if let Ok(kind) = HeaderValue::from_str(&direct.content_type) {
            response.headers_mut().insert(CONTENT_TYPE, kind);
        }
    }
    response
}

/// A redirect to `location`.
pub fn redirect_response(redirect: &Redirect, location: HeaderValue) -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() =
        StatusCode::from_u16(redirect.status_code).unwrap_or(StatusCode::FOUND);
    response.headers_mut().insert(LOCATION, location);
    response
}

/// The settings of requests to a destination matched by its name.
fn default_policy(dst: &DestinationConfig, find: &Finder<'_>) -> RoutePolicy {
    RoutePolicy {
        label: Arc::from("default"),
        timeout: dst.timeout.0,
        per_try_timeout: dst.per_try_timeout.map(|t| t.0),
        retries: Arc::new(RetryPolicy::from_config(&dst.retries)),
        fallback: dst
            .fallback
            .as_ref()
            .and_then(|f| Fallback::from_config(f, find)),
    }
}

/// The destination's settings with a route's overrides.
fn route_policy(
    route: &RouteConfig,
    label: &Arc<str>,
    dst: &DestinationConfig,
    find: &Finder<'_>,
) -> RoutePolicy {
    let base = default_policy(dst, find);
    RoutePolicy {
        label: label.clone(),
        timeout: route.timeout.map_or(base.timeout, |t| t.0),
        per_try_timeout: route.per_try_timeout.map(|t| t.0).or(base.per_try_timeout),
        retries: route
            .retries
            .as_ref()
            .map_or(base.retries, |r| Arc::new(RetryPolicy::from_config(r))),
        fallback: match &route.fallback {
            Some(f) => Fallback::from_config(f, find),
            None => base.fallback,
        },
    }
}
