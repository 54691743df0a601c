//! App -> mesh. The app sends plain HTTP/1.1 or h2c to the outbound listener;
//! each request is routed by its authority and path to a destination
//! service, and goes to one of its endpoints: over the shared mTLS HTTP/2
//! connection to a Pilotfish sidecar, or as plain HTTP to a service outside
//! the mesh (`transport: plaintext`).
//!
//! ```text
//! request -> Target::of -> RouteTable::find -> Destination::send -> endpoint
//!         <- from_upstream_response <------------------------------ (peer's inbound)
//! ```

pub mod destination;
pub mod endpoint;
pub mod route;

use std::time::Instant;

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use tracing::info;

use self::destination::Destination;
use self::route::{RouteTable, Target};
use crate::app::BuildError;
use crate::config::{Config, OutboundConfig};
use crate::http::headers::{self, ORIG_PROTO};
use crate::http::server::HeaderLimits;
use crate::http::{Body, Direction, ProxyError};
use crate::identity::ServiceName;
use crate::metrics::RequestMetrics;
use crate::tls::Credentials;

/// Metric label for requests that matched no destination.
const UNKNOWN_SERVICE: &str = "unknown";

/// The outbound side: routes and destinations.
#[derive(Debug)]
pub struct Outbound {
    routes: RouteTable,
    destinations: Vec<Destination>,
    limits: HeaderLimits,
    metrics: RequestMetrics,
}

impl Outbound {
    /// Builds the outbound side of `config`.
    pub fn new(
        config: &Config,
        outbound: &OutboundConfig,
        creds: Option<&Credentials>,
        limits: HeaderLimits,
        metrics: RequestMetrics,
    ) -> Result<Self, BuildError> {
        let destinations = outbound
            .services
            .iter()
            .map(|(name, dst)| {
                let service = ServiceName::new(name).map_err(BuildError::config)?;
                let identity = crate::config::expected_identity(config, name, dst)
                    .map_err(BuildError::config)?;
                let namespace = dst.namespace.as_deref().unwrap_or(&config.namespace);
                Destination::new(service, dst, identity, namespace, creds, limits)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            routes: RouteTable::build(outbound, &config.namespace),
            destinations,
            limits,
            metrics,
        })
    }

    /// Handles one request from the app. Never fails: proxy errors become
    /// responses with the `pilotfish-error` header.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let (service, result) = self.forward(req).await;
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                info!(
                    direction = "outbound",
                    service,
                    reason = err.reason().as_str(),
                    error = %err,
                    "request failed"
                );
                err.to_response(Direction::Outbound)
            }
        };
        self.metrics.record(
            Direction::Outbound,
            service,
            response.status(),
            start.elapsed(),
        );
        response
    }

    /// Routes and sends; returns the destination's name for metrics.
    async fn forward(&self, req: Request<Incoming>) -> (&str, Result<Response<Body>, ProxyError>) {
        let destination = match self.route(&req) {
            Ok(destination) => destination,
            Err(err) => return (UNKNOWN_SERVICE, Err(err)),
        };
        let name = destination.name().as_str();
        let (mut parts, body) = req.into_parts();
        let app_spoke_http1 = parts.version != Version::HTTP_2;
        headers::strip_hop_by_hop(&mut parts.headers);
        // Only a sidecar may say what protocol the app spoke.
        parts.headers.remove(ORIG_PROTO);
        let req = Request::from_parts(parts, Body::Incoming(body));
        let result = destination.send(req, app_spoke_http1).await;
        (name, result.map(from_upstream_response))
    }

    /// Decides where a request goes, without touching it.
    fn route(&self, req: &Request<Incoming>) -> Result<&Destination, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::Unsupported("CONNECT (tunnelling)"));
        }
        // hyper enforces the count for HTTP/1 itself; this covers HTTP/2.
        let count = req.headers().len();
        if count > self.limits.max_count {
            return Err(ProxyError::TooManyHeaders {
                count,
                limit: self.limits.max_count,
            });
        }
        let target = Target::of(req)?;
        let index =
            self.routes
                .find(&target, req.uri().path())
                .ok_or_else(|| ProxyError::NoRoute {
                    host: target.host.clone().into_owned(),
                })?;
        Ok(&self.destinations[index])
    }
}

/// Prepares an upstream's response for the app.
fn from_upstream_response(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::Incoming(body))
}
