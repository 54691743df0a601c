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

use std::sync::Arc;
use std::time::Instant;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use tracing::info;

use self::destination::{Destination, DestinationKey};
use self::route::{RouteTable, Target};
use crate::app::{BuildError, PROXY_ADDED_HEADERS};
use crate::config::{Config, OutboundConfig};
use crate::http::headers::{self, ORIG_PROTO};
use crate::http::server::{self, HeaderLimits};
use crate::http::{Body, Direction, ProxyError};
use crate::identity::ServiceName;
use crate::metrics::{Metrics, RequestMetrics};
use crate::tls::{CredentialStore, TlsSettings};

/// Metric label for requests that matched no destination.
const UNKNOWN_SERVICE: &str = "unknown";

/// The outbound side: routes and destinations.
#[derive(Debug)]
pub struct Outbound {
    routes: RouteTable,
    destinations: Vec<Arc<Destination>>,
    limits: HeaderLimits,
    metrics: RequestMetrics,
    http: Arc<auto::Builder<TokioExecutor>>,
}

impl Outbound {
    /// Builds the outbound side of `config`. Destinations that `previous`
    /// already has, built from the same settings, are kept as they are,
    /// with their connections.
    pub fn build(
        config: &Config,
        outbound: &OutboundConfig,
        creds: Option<&Arc<CredentialStore>>,
        metrics: &Metrics,
        previous: Option<&Outbound>,
    ) -> Result<Self, BuildError> {
        let server_limits = HeaderLimits::from_config(&config.http);
        // Room for the fields the far sidecar adds, so it never refuses
        // what this one admitted.
        let limits = server_limits.with_headroom(PROXY_ADDED_HEADERS);
        let tls = config.tls.as_ref().map(TlsSettings::from_config);
        let mut destinations = Vec::with_capacity(outbound.services.len());
        for (name, dst) in &outbound.services {
            let key = DestinationKey {
                name: ServiceName::new(name).map_err(BuildError::config)?,
                config: dst.get().clone(),
                identity: crate::config::expected_identity(config, name, dst)
                    .map_err(BuildError::config)?,
                namespace: dst
                    .namespace
                    .clone()
                    .unwrap_or_else(|| config.namespace.to_string()),
                limits,
                tls,
            };
            let kept = previous
                .and_then(|p| p.destinations.iter().find(|d| *d.key() == key))
                .cloned();
            let destination = match kept {
                Some(destination) => destination,
                None => Arc::new(Destination::new(key, creds, &metrics.tls)?),
            };
            destinations.push(destination);
        }
        Ok(Self {
            routes: RouteTable::build(outbound, &config.namespace),
            destinations,
            limits,
            metrics: metrics.requests.clone(),
            http: Arc::new(server::builder(server_limits)),
        })
    }

    /// The HTTP server settings for the app's connections.
    pub fn http(&self) -> &auto::Builder<TokioExecutor> {
        &self.http
    }

    /// The destinations, in name order.
    pub fn destinations(&self) -> &[Arc<Destination>] {
        &self.destinations
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
